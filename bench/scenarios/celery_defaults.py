"""celery_defaults: a plain Celery app, Celery's defaults, the same no-op task.

Published the way a Celery user does, one ``apply_async`` at a time (no
confirms by default, so the publisher never waits for RabbitMQ).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.harness import Bench, summary
from bench.workload import drain, end_to_end_cpu, load_peer, warm_up

QUEUE = "celery"  # Celery's default queue


def publisher(peer: ModuleType) -> Callable[[int], None]:
    """A ``publish(n)`` sending ``n`` no-ops the way a Celery user does: one ``apply_async`` each."""

    def publish(n: int) -> None:
        for _ in range(n):
            peer.noop.apply_async((time.time(),))

    return publish


def run(bench: Bench) -> dict[str, Any]:
    with bench.vhost() as vhost:
        peer = load_peer("bench.apps.plain_celery", vhost.url)
        probe = bench.probe("celery_defaults")
        env = bench.env(vhost, probe)
        worker = bench.start("celery_defaults", ["celery", "-A", "bench.apps.plain_celery", "worker"], env)
        publish = publisher(peer)
        try:
            warm_up(bench, probe, publish)
            runs, cpu_us = end_to_end_cpu(bench, "celery_defaults", probe, publish)
            drains = drain(bench, "celery_defaults", probe, publish, peer.app, QUEUE)
        finally:
            worker.stop()
            peer.app.close()
    return summary(runs, cpu_us_per_task=cpu_us, drain=summary(drains))
