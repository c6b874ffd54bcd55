"""metrics_overhead: fleet with worker metrics on against off, both consuming at the same time.

Two `fleet worker default`s, one with FLEET_METRICS_ENABLED=1 and one with 0,
each in its own vhost and warmed up. Each of ``metrics_rounds`` rounds publishes
``metrics_tasks`` no-ops to both at once (two publisher threads, the one started
first alternating), so the two workers compete for the same cores under the
same load from the rest of the machine, and a neighbour's burst hits both
alike: on this shared machine, alternating short runs swung 2-3x from one
second to the next. A round's ratio is on/off of the tasks each completed in the
window where both were running, and on/off of the CPU each worker's processes
spent per task (/proc, bench.cpu). The overhead is ``median - 1`` of the rounds'
CPU ratios (what metrics cost is worker CPU; a round's CPU ratio also varies
several times less than its rate ratio here), with a distribution-free 95%
confidence interval of that median (bench.stats.median_ci). ``resolves_5pct``:
the interval is narrower than 5 points; ``decides_goal``: it lies wholly above
or below 5%, so the run says whether the goal is met. The throughput overhead,
``1 - median`` of the rate ratios, is kept beside it with its own interval.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from bench.harness import Bench, median_of, say
from bench.probe import Probe
from bench.scenarios.fleet import fleet_publisher, fleet_side
from bench.stats import median_ci, quartiles
from bench.workload import warm_up

SIDES = ("on", "off")
GOAL = 0.05  # docs/PERFORMANCE.md: metrics may cost at most 5%


def toggle() -> tuple[dict[str, str], dict[str, str]] | str:
    """(env with metrics on, env with metrics off), or why the scenario cannot run yet."""
    if importlib.util.find_spec("fleet.metrics") is None or importlib.util.find_spec("fleet.metrics.setup") is None:
        return "worker metrics (branch metrics, fleet.metrics.setup) are not in this tree yet"
    from fleet.settings import Settings

    if "metrics_enabled" not in Settings.__dataclass_fields__:
        return "fleet has worker metrics but no setting to switch them off (FLEET_METRICS_ENABLED)"
    return {"FLEET_METRICS_ENABLED": "1"}, {"FLEET_METRICS_ENABLED": "0"}


def run(bench: Bench) -> dict[str, Any]:
    envs = toggle()
    if isinstance(envs, str):
        return {"status": "pending", "reason": envs, "overhead": None}
    n, rounds = bench.sizes.metrics_tasks, bench.sizes.metrics_rounds
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu_us: dict[str, list[float]] = {side: [] for side in SIDES}
    with ExitStack() as stack:
        sides = {
            side: stack.enter_context(fleet_side(bench, f"metrics-{side}", env))
            for side, env in zip(SIDES, envs, strict=True)
        }
        publish = {side: fleet_publisher(fleet.app) for side, fleet in sides.items()}
        for side, fleet in sides.items():
            fleet.start(bench, f"metrics-{side}")
        for side, fleet in sides.items():
            warm_up(bench, fleet.probe, publish[side])
        for i in range(rounds):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            with bench.cpu(sides["on"].processes) as on_cpu, bench.cpu(sides["off"].processes) as off_cpu:
                finished = concurrent_round(bench, {side: sides[side].probe for side in order}, publish, n)
            for side, rate in overlap_rates(finished).items():
                rates[side].append(rate)
            cpu_us["on"].append(on_cpu.seconds / n * 1e6)
            cpu_us["off"].append(off_cpu.seconds / n * 1e6)
            figures = ", ".join(f"{side} {rates[side][-1]:,.0f}/s {cpu_us[side][-1]:,.0f} µs" for side in SIDES)
            say(f"metrics_overhead: round {i + 1}/{rounds}: {figures} CPU per task")
    return overhead_figures(rates, cpu_us)


def concurrent_round(
    bench: Bench, probes: dict[str, Probe], publish: dict[str, Callable[[int], object]], n: int
) -> dict[str, list[float]]:
    """Publish ``n`` to every side at once (threads started in ``probes``' order); each side's finish times."""
    for probe in probes.values():
        probe.reset()
    errors: list[BaseException] = []

    def send(side: str) -> None:
        try:
            publish[side](n)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the bench's thread below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(side,)) for side in probes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for probe in probes.values():
        probe.wait(n, timeout=bench.sizes.timeout, alive=bench.alive)
    return {side: [run.ran_at for run in probe.runs()] for side, probe in probes.items()}


def overlap_rates(finished: dict[str, list[float]]) -> dict[str, float]:
    """Each side's tasks/s within the window where every side was running (first to last finish)."""
    start = max(min(times) for times in finished.values())
    end = min(max(times) for times in finished.values())
    if end <= start:
        raise RuntimeError("the sides did not run at the same time; nothing to compare")
    return {side: sum(start <= t <= end for t in times) / (end - start) for side, times in finished.items()}


def overhead_figures(rates: dict[str, list[float]], cpu_us: dict[str, list[float]]) -> dict[str, Any]:
    """The rounds' on/off ratios turned into overheads (positive: metrics cost), each with its 95% CI.

    The headline is CPU per task: metrics cost CPU in the worker, and on this shared
    machine the CPU ratio of a round varies several times less than its rate ratio.
    """
    cpu_ratios = [on / off for on, off in zip(cpu_us["on"], cpu_us["off"], strict=True) if off > 0]
    rate_ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True) if off > 0]
    low, high = median_ci(cpu_ratios)
    q1, q3 = quartiles(cpu_ratios)
    rate_low, rate_high = median_ci(rate_ratios)
    figures = {
        "overhead": round(median_of(cpu_ratios) - 1, 4),
        "overhead_ci95": [round(low - 1, 4), round(high - 1, 4)],
        "overhead_iqr": [round(q1 - 1, 4), round(q3 - 1, 4)],
        "ci95_width": round(high - low, 4),
        "resolves_5pct": high - low < 0.05,
        "decides_goal": not low - 1 <= GOAL <= high - 1,  # the interval lies wholly on one side of 5%
        "rounds": len(cpu_ratios),
        "throughput_overhead": round(1 - median_of(rate_ratios), 4),
        "throughput_overhead_ci95": [round(1 - rate_high, 4), round(1 - rate_low, 4)],
        "on": {"tasks_per_s": round(median_of(rates["on"]), 1), "cpu_us_per_task": round(median_of(cpu_us["on"]), 1)},
        "off": {
            "tasks_per_s": round(median_of(rates["off"]), 1),
            "cpu_us_per_task": round(median_of(cpu_us["off"]), 1),
        },
        "cpu_round_ratios": [round(r, 4) for r in cpu_ratios],
        "rate_round_ratios": [round(r, 4) for r in rate_ratios],
    }
    say(f"metrics_overhead: CPU per task {figures['overhead']:+.1%} (95% CI {figures['overhead_ci95'][0]:+.1%} to "
        f"{figures['overhead_ci95'][1]:+.1%}); throughput {figures['throughput_overhead']:+.1%} (95% CI "
        f"{figures['throughput_overhead_ci95'][0]:+.1%} to {figures['throughput_overhead_ci95'][1]:+.1%})")  # fmt: skip
    return {"tasks_per_s": figures["on"]["tasks_per_s"], **figures}
