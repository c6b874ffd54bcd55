"""cpu_bound: the `default` pool running tasks of about 5 ms of pure-Python work.

Efficiency is tasks/s over the ideal ``cores / task CPU time``, the task CPU
time being the median each task measured in its own thread (bench.work). 1.0
means every core ran task code all the time; what is lost is the worker's
per-task path, idle slots, and whatever else the machine ran. Two figures tell
those apart: ``worker_cpu_share`` (the CPU the pool got / wall time / cores)
and ``task_share_of_worker_cpu`` (task CPU / the CPU the pool used).
"""

from __future__ import annotations

import os
from typing import Any

from bench import work
from bench.efficiency import drain_windows
from bench.harness import Bench, median_of, summary
from bench.scenarios.fleet import fleet_publisher, fleet_side
from bench.stats import efficiency

TASK_CPU_S = 0.005


def run(bench: Bench) -> dict[str, Any]:
    iterations = work.calibrate(TASK_CPU_S)
    cores = os.cpu_count() or 1
    with fleet_side(bench, "cpu_bound") as side:
        publish = fleet_publisher(side.app, task="bench.spin")
        drained = drain_windows(
            bench, side, "cpu_bound", lambda n: publish(n, iterations), bench.sizes.cpu_tasks, cores
        )
        spec = side.spec
    task_cpu = median_of([run.cpu for run in drained.runs if run.cpu is not None])
    rate = median_of(drained.rates)
    return summary(
        drained.rates,
        efficiency=round(efficiency(rate, cores, task_cpu), 3),
        ideal_per_s=round(cores / task_cpu, 1),
        task_cpu_ms=round(task_cpu * 1000, 3),
        iterations=iterations,
        cores=cores,
        worker_cpu_share=drained.cpu_share,
        task_share_of_worker_cpu=round(len(drained.runs) * task_cpu / drained.cpu_seconds, 3)
        if drained.cpu_seconds > 0
        else None,
        pool={"name": spec.name, "kind": spec.pool, "concurrency": spec.concurrency, "replicas": spec.replicas},
    )
