"""`python -m bench.ab BASE`: this tree's `default` worker against commit BASE's (or a tree's), consuming at once.

How the per-task cuts in docs/PERFORMANCE.md were measured. BASE is exported
(``git archive``) to a scratch directory and its workers import fleet from there
(PYTHONPATH comes first); each round publishes the same no-ops (or ``--task
bench.store``, results stored) to both sides at once, as metrics_overhead does, so
the shared machine's drift hits both alike; ``--set CELERY_RESULT_BACKEND=redis://...``
puts both sides on another result backend. Printed: the median new/base ratio of
worker CPU per task and of tasks/s, with their 95% intervals.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.harness import QUICK, ROOT, Bench, median_of, say
from bench.scenarios.fleet import fleet_publisher, fleet_side
from bench.scenarios.metrics_overhead import concurrent_round, overlap_rates
from bench.stats import median_ci
from bench.workload import warm_up

SIDES = ("new", "base")


def export(commit: str, into: Path) -> Path:
    """``commit``'s tree, unpacked into ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base", help="the commit to compare against, or a directory holding a tree")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=2000, help="per side and round")
    parser.add_argument("--task", default="bench.noop")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="env override for both sides' processes"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-ab-"))
    bench = Bench(sizes=QUICK, work=work, overrides=dict(item.split("=", 1) for item in args.set))
    base = Path(args.base) if Path(args.base).is_dir() else export(args.base, work / "base")
    envs = {"new": {}, "base": {"PYTHONPATH": str(base)}}
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu_us: dict[str, list[float]] = {side: [] for side in SIDES}
    with ExitStack() as stack:
        sides = {side: stack.enter_context(fleet_side(bench, f"ab-{side}", envs[side])) for side in SIDES}
        publish = {side: fleet_publisher(fleet.app, task=args.task) for side, fleet in sides.items()}
        for side, fleet in sides.items():
            fleet.start(bench, f"ab-{side}")
        for side, fleet in sides.items():
            warm_up(bench, fleet.probe, publish[side])
        for i in range(args.rounds):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            with bench.cpu(sides["new"].processes) as new_cpu, bench.cpu(sides["base"].processes) as base_cpu:
                finished = concurrent_round(bench, {side: sides[side].probe for side in order}, publish, args.tasks)
            for side, rate in overlap_rates(finished).items():
                rates[side].append(rate)
            cpu_us["new"].append(new_cpu.seconds / args.tasks * 1e6)
            cpu_us["base"].append(base_cpu.seconds / args.tasks * 1e6)
            say(", ".join(f"{side} {rates[side][-1]:,.0f}/s {cpu_us[side][-1]:,.0f} µs" for side in SIDES))
    for name, values in (("CPU per task", cpu_us), ("tasks/s", rates)):
        ratios = [new / base for new, base in zip(values["new"], values["base"], strict=True) if base > 0]
        low, high = median_ci(ratios)
        print(
            f"{name}: new/base median {median_of(ratios):.3f} (95% CI {low:.3f}-{high:.3f}); "
            f"new {median_of(values['new']):,.0f}, base {median_of(values['base']):,.0f}"
        )


if __name__ == "__main__":
    main()
