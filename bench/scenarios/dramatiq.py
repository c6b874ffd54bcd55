"""dramatiq: Dramatiq's RabbitMQ broker and worker with their defaults, the same no-op.

Published one ``send`` at a time (Dramatiq's broker does not confirm by default).
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Bench, summary
from bench.workload import end_to_end_cpu, load_peer, warm_up


def run(bench: Bench) -> dict[str, Any]:
    with bench.vhost() as vhost:
        peer = load_peer("bench.apps.dramatiq_app", vhost.url)
        probe = bench.probe("dramatiq")
        env = bench.env(vhost, probe)
        worker = bench.start("dramatiq", ["dramatiq", "bench.apps.dramatiq_app"], env)

        def publish(n: int) -> None:
            for _ in range(n):
                peer.noop.send(time.time())

        try:
            warm_up(bench, probe, publish)
            runs, cpu_us = end_to_end_cpu(bench, "dramatiq", probe, publish)
        finally:
            worker.stop()
            peer.broker.close()
    return summary(runs, cpu_us_per_task=cpu_us)
