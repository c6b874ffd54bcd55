"""priority_under_flood: how long a high_priority task waits while every other queue is flooded.

`email`, `reports` and `default` each hold a backlog of no-ops and their pools
(production specs, every replica, started as the rendered deploy starts them, each with the
niceness of its spec) chew through it on the same two cores, while high_priority
tasks are sent one by one, as a client would (confirmed ``apply_async``), every
10 ms. The figure is enqueue-to-start: from just before the publish to the
moment the task body starts.
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Bench, percentile, say
from bench.probe import Probe, Run
from bench.scenarios.fleet import fleet_app, fleet_publisher
from fleet.pools import get_pool
from fleet.testing.broker import queue_depth

FLOODED = ("email", "reports", "default")
POOLS = ("high_priority", *FLOODED)
SPACING = 0.01  # seconds between high_priority tasks
WARMUP_PROBES = 50


def run(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    with bench.vhost() as vhost:
        probe = bench.probe("priority_under_flood")
        env = bench.env(vhost, probe)
        app = fleet_app(env)
        try:
            for queue in FLOODED:
                fleet_publisher(app, queue=queue)(sizes.flood)
            say(f"priority_under_flood: {sizes.flood:,} no-ops waiting in each of {', '.join(FLOODED)}")
            # As the rendered deploy runs them: every replica, `fleet worker <pool> --index i` (numprocs).
            workers = [
                bench.start(f"flood-{pool}-{index}", ["fleet", "worker", pool, "--index", str(index)], env)
                for pool in POOLS
                for index in range(get_pool(pool).replicas)
            ]
            for worker in workers:
                worker.wait_for_log(" ready.", timeout=120)
            # Warm-up: the pools' start-up burst (forking children, first prefetch) is not the flood.
            _send_probes(app, "warm", WARMUP_PROBES)
            _wait_runs(bench, probe, "warm", WARMUP_PROBES)
            backlog_at_start = {queue: queue_depth(vhost.url, queue)[0] for queue in FLOODED}
            _send_probes(app, "hp", sizes.probes)
            runs = _wait_runs(bench, probe, "hp", sizes.probes)
            backlog_at_end = {queue: queue_depth(vhost.url, queue)[0] for queue in FLOODED}
        finally:
            bench.stop_all()
            app.close()
    waits = [(run.ran_at - run.sent_at) * 1000 for run in runs]
    say(f"priority_under_flood: backlog {backlog_at_start} at the first probe, {backlog_at_end} after the last")
    return {
        "p50_ms": round(percentile(waits, 0.50), 1),
        "p99_ms": round(percentile(waits, 0.99), 1),
        "max_ms": round(max(waits), 1),
        "probes": len(waits),
        "backlog_at_start": backlog_at_start,
        "backlog_at_end": backlog_at_end,
    }


def _wait_runs(bench: Bench, probe: Probe, tag: str, count: int) -> list[Run]:
    deadline = time.monotonic() + bench.sizes.timeout
    while len(runs := probe.runs(tag)) < count:
        bench.alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(runs)} of {count} high_priority tasks ({tag}) ran in time")
        time.sleep(0.2)
    return runs


def _send_probes(app: Any, tag: str, count: int) -> None:
    """One confirmed publish every SPACING seconds (paced, not bursted)."""
    next_at = time.monotonic()
    for _ in range(count):
        app.send_task("bench.noop", (time.time(), tag), queue="high_priority")
        next_at += SPACING
        time.sleep(max(0.0, next_at - time.monotonic()))
