"""What cpu_bound and io_bound share: a pool drains a preloaded queue; tasks/s in windows.

The queue is filled before the pool's workers start, so no publisher shares the
cores with them and start-up is not in the figure: the first ``skip`` completions
are the warm-up, then ``repeats`` consecutive windows of ``size`` completions
each give a rate (bench.stats.window_rates). The workers are `fleet worker
<pool>` as production starts them, whatever execution model the pool spec names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.harness import Bench, say
from bench.probe import Run
from bench.scenarios.fleet import FleetSide
from bench.stats import window_rates


@dataclass(frozen=True)
class Drained:
    rates: list[float]  # one per window
    runs: list[Run]  # the measured tasks' probe lines (warm-up left out)
    cpu_seconds: float  # CPU the workers used after the warm-up, every process of the pool
    cpu_share: float  # that CPU / wall time / cores: below 1, the machine's other load took the rest


def drain_windows(
    bench: Bench, side: FleetSide, name: str, publish: Callable[[int], object], size: int, cores: int
) -> Drained:
    skip = max(1, size // 4)
    total = skip + bench.sizes.repeats * size
    publish(total)
    say(f"{name}: {total:,} tasks waiting; starting `fleet worker {side.spec.name}`")
    side.start(bench, name)
    side.probe.wait(skip, timeout=bench.sizes.timeout, alive=bench.alive)
    t0 = time.monotonic()
    with bench.cpu(side.processes) as used:
        side.probe.wait(total, timeout=bench.sizes.timeout, alive=bench.alive)
    wall = time.monotonic() - t0
    runs = sorted(side.probe.runs(), key=lambda run: run.ran_at)
    rates = window_rates([run.ran_at for run in runs], skip, size)
    for i, rate in enumerate(rates):
        say(f"{name}: window {i + 1}/{len(rates)}: {rate:,.0f} tasks/s")
    share = round(used.seconds / wall / cores, 3) if wall > 0 else float("nan")
    return Drained(rates, runs[skip:], used.seconds, share)
