"""fleet: `fleet worker default` exactly as production runs it, the same no-op task.

Publisher confirms, persistent messages, late acks, the `default` pool spec
(fleet.pools), metrics as configured. Published through fleet's batch path,
``publish_many`` (pipelined confirms; returns only once RabbitMQ confirmed all).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kombu import Connection

from bench.harness import Bench, summary
from bench.workload import drain, end_to_end, warm_up
from fleet.celery_app import FleetCelery, create_celery
from fleet.publish import publish_many
from fleet.settings import load_settings
from fleet.worker.run import resolve_pool
from queues import declare_topology

BATCH = 1000  # messages per publish_many call, as the batch API would send them


def fleet_publisher(app: FleetCelery, queue: str | None = None, batch: int = BATCH) -> Any:
    """A ``publish(n)`` that sends ``n`` no-ops through ``publish_many`` in batches."""
    options = {"queue": queue} if queue else {}

    def publish(n: int) -> None:
        for start in range(0, n, batch):
            calls = [("bench.noop", (time.time(),), {}, options) for _ in range(min(batch, n - start))]
            publish_many(app, calls, timeout=60)

    return publish


def fleet_app(env: Mapping[str, str]) -> FleetCelery:
    """The fleet's Celery app for a bench vhost, with the topology declared."""
    app = create_celery(load_settings(env))
    with Connection(app.fleet_settings.broker_url) as connection:
        declare_topology(connection, app.fleet_settings.queue_type, app.fleet_settings.delivery_limit)
    return app


def measure(bench: Bench, name: str, extra_env: Mapping[str, str] | None = None, with_drain: bool = True) -> dict:
    """End to end (and drain) of the `default` pool's workers (one per replica) with ``extra_env``."""
    with bench.vhost() as vhost:
        probe = bench.probe(name)
        env = bench.env(vhost, probe, **(extra_env or {}))
        app = fleet_app(env)
        spec = resolve_pool("default", app.fleet_settings)
        for index in range(spec.replicas):  # as supervisor runs the pool: one process per replica
            argv = ["fleet", "worker", "default"] + (["--index", str(index)] if spec.replicas > 1 else [])
            bench.start(f"{name}-{index}", argv, env)
        publish = fleet_publisher(app)
        try:
            warm_up(bench, probe, publish)
            runs = end_to_end(bench, name, probe, publish)
            drains = drain(bench, name, probe, publish, app, "default", workers=spec.replicas) if with_drain else []
        finally:
            bench.stop_all()
            app.close()
    result = summary(runs)
    if drains:
        result["drain"] = summary(drains)
    return result


#: how the fleet runs in production; metrics on (see metrics_overhead for the toggle)
PRODUCTION_ENV: dict[str, str] = {}


def run(bench: Bench) -> dict[str, Any]:
    return measure(bench, "fleet", PRODUCTION_ENV)
