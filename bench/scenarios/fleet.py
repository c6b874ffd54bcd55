"""fleet: `fleet worker default` exactly as production runs it, the same no-op task.

Publisher confirms, persistent messages, late acks, the `default` pool spec
(fleet.pools), metrics as configured. Published through fleet's batch path,
``publish_many`` (pipelined confirms; returns only once RabbitMQ confirmed all).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection

from bench.harness import Bench, summary
from bench.probe import Probe
from bench.workload import drain, end_to_end_cpu, warm_up
from fleet.celery_app import FleetCelery, create_celery
from fleet.ops.pause import open_pauses
from fleet.pools import PoolSpec
from fleet.publish import publish_many
from fleet.settings import load_settings
from fleet.testing.processes import FleetProcess
from fleet.worker.run import resolve_pool
from queues import declare_topology

BATCH = 1000  # messages per publish_many call, as the batch API would send them


def fleet_publisher(app: FleetCelery, queue: str | None = None, batch: int = BATCH, task: str = "bench.noop") -> Any:
    """A ``publish(n, *args)`` that sends ``n`` ``task(sent_at, *args)`` through ``publish_many`` in batches;
    it returns their task ids."""
    options = {"queue": queue} if queue else {}

    def publish(n: int, *args: Any) -> list[str]:
        ids: list[str] = []
        for start in range(0, n, batch):
            calls = [(task, (time.time(), *args), {}, options) for _ in range(min(batch, n - start))]
            ids += publish_many(app, calls, timeout=60)
        return ids

    return publish


def fleet_app(env: Mapping[str, str]) -> FleetCelery:
    """The fleet's Celery app for a bench vhost, with the topology declared."""
    app = create_celery(load_settings(env))
    with Connection(app.fleet_settings.broker_url) as connection:
        declare_topology(connection, app.fleet_settings.queue_type, app.fleet_settings.delivery_limit)
    return app


@dataclass
class FleetSide:
    """One fleet under test: its vhost, environment, app, probe and the pool's workers once started."""

    url: str
    env: dict[str, str]
    app: FleetCelery
    probe: Probe
    spec: PoolSpec
    processes: list[FleetProcess] = field(default_factory=list)

    def start(self, bench: Bench, name: str) -> list[FleetProcess]:
        """``fleet worker <pool>``, one per replica of the pool spec, as supervisor runs the pool."""
        for index in range(self.spec.replicas):
            argv = ["fleet", "worker", self.spec.name] + (["--index", str(index)] if self.spec.replicas > 1 else [])
            self.processes.append(bench.start(f"{name}-{index}", argv, self.env))
        return self.processes


@contextmanager
def fleet_side(
    bench: Bench, name: str, extra_env: Mapping[str, str] | None = None, pool: str = "default"
) -> Iterator[FleetSide]:
    """A private vhost with the topology declared and ``pool``'s spec resolved; workers stopped on leaving."""
    with bench.vhost() as vhost:
        probe = bench.probe(name)
        env = bench.env(vhost, probe, **(extra_env or {}))
        app = fleet_app(env)
        side = FleetSide(vhost.url, env, app, probe, resolve_pool(pool, app.fleet_settings))
        try:
            yield side
        finally:
            bench.stop(side.processes)
            app.close()


def measure(bench: Bench, name: str, extra_env: Mapping[str, str] | None = None, with_drain: bool = True) -> dict:
    """End to end (and drain) of the `default` pool's workers (one per replica) with ``extra_env``."""
    with fleet_side(bench, name, extra_env) as side:
        side.start(bench, name)
        publish = fleet_publisher(side.app)
        warm_up(bench, side.probe, publish)
        runs, cpu_us = end_to_end_cpu(bench, name, side.probe, publish)
        drains: list[float] = []
        if with_drain:
            pauses = open_pauses(side.app.fleet_settings)
            drains = drain(bench, name, side.probe, publish, side.app, "default", side.spec.replicas, pauses)
    result = summary(runs, cpu_us_per_task=cpu_us)
    if drains:
        result["drain"] = summary(drains)
    return result


#: how the fleet runs in production; metrics on (see metrics_overhead for the toggle)
PRODUCTION_ENV: dict[str, str] = {}


def run(bench: Bench) -> dict[str, Any]:
    return measure(bench, "fleet", PRODUCTION_ENV)
