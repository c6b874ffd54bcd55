"""celery_threads: plain Celery on the `default` pool's shape, the same no-op.

Processes x threads, prefetch and fair scheduling taken from the `default` pool
spec as fleet's side resolves it (fleet.pools, with any ``--set
FLEET_POOL_DEFAULT_*``), everything else Celery's defaults: early acks, no metrics,
no per-task log line, no message checks. What its worker spends per task is
Celery's own per-task path on that shape, the floor fleet's `default` pool
builds on; fleet's CPU per task against it says what fleet's own work costs
(docs/PERFORMANCE.md, "What is left, goal by goal").
"""

from __future__ import annotations

from typing import Any

from bench.harness import Bench, summary
from bench.scenarios.celery_defaults import publisher
from bench.workload import end_to_end_cpu, load_peer, warm_up
from fleet.settings import load_settings
from fleet.worker.run import resolve_pool


def run(bench: Bench) -> dict[str, Any]:
    with bench.vhost() as vhost:
        peer = load_peer("bench.apps.plain_celery", vhost.url)
        probe = bench.probe("celery_threads")
        env = bench.env(vhost, probe)
        spec = resolve_pool("default", load_settings(env))
        shape = ["-P", "threads", "-c", str(spec.concurrency), "--prefetch-multiplier", str(spec.prefetch_multiplier)]
        workers = [
            bench.start(
                f"celery_threads-{index}",
                ["celery", "-A", "bench.apps.plain_celery", "worker", *shape, "-O", "fair", "-n", f"plain{index}@%h"],
                env,
            )
            for index in range(spec.replicas)
        ]
        publish = publisher(peer)
        try:
            warm_up(bench, probe, publish)
            runs, cpu_us = end_to_end_cpu(bench, "celery_threads", probe, publish)
        finally:
            bench.stop(workers)
            peer.app.close()
    return summary(
        runs,
        cpu_us_per_task=cpu_us,
        shape={"processes": spec.replicas, "threads": spec.concurrency, "prefetch": spec.prefetch_multiplier},
    )
