"""io_bound: the `email` pool (its production spec) running tasks that wait 20 ms, as on an SMTP peer.

Efficiency is tasks/s over the ideal ``concurrency x replicas / 0.02 s``: 1.0
means every slot of the pool was waiting on a peer all the time.
"""

from __future__ import annotations

import os
from typing import Any

from bench.efficiency import drain_windows
from bench.harness import Bench, median_of, summary
from bench.scenarios.fleet import fleet_publisher, fleet_side
from bench.stats import efficiency

WAIT_S = 0.02
POOL = "email"


def run(bench: Bench) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    with fleet_side(bench, "io_bound", pool=POOL) as side:
        publish = fleet_publisher(side.app, queue=POOL, task="bench.wait")
        drained = drain_windows(bench, side, "io_bound", lambda n: publish(n, WAIT_S), bench.sizes.io_tasks, cores)
        spec = side.spec
    slots = spec.concurrency * spec.replicas
    return summary(
        drained.rates,
        efficiency=round(efficiency(median_of(drained.rates), slots, WAIT_S), 3),
        ideal_per_s=round(slots / WAIT_S, 1),
        wait_ms=WAIT_S * 1000,
        worker_cpu_share=drained.cpu_share,
        pool={"name": spec.name, "kind": spec.pool, "concurrency": spec.concurrency, "replicas": spec.replicas},
    )
