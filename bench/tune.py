"""`python -m bench.tune`: the fleet scenario under pool variants, interleaved, medians side by side.

How fleet.pools' numbers for `default` were chosen. Variants run in turn, round
after round, so a shared machine's drift hits them all alike.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.harness import FULL, QUICK, Bench, median_of, say
from bench.scenarios.fleet import measure

P = "FLEET_POOL_DEFAULT_"
#: the `default` spec before it moved to threads: one process, prefork x 2, recycled every 5000 tasks
PREFORK = {f"{P}POOL": "prefork", f"{P}REPLICAS": "1", f"{P}CONCURRENCY": "2", f"{P}MAX_TASKS_PER_CHILD": "5000"}
VARIANTS: dict[str, dict[str, str]] = {
    "as specified": {},
    "3 processes x 4 threads": {f"{P}REPLICAS": "3"},
    "2 processes x 8 threads": {f"{P}CONCURRENCY": "8"},
    "2 processes x 2 threads": {f"{P}CONCURRENCY": "2"},
    "2 processes x 4 threads x prefetch 16": {f"{P}PREFETCH_MULTIPLIER": "16"},
    "1 process x 4 threads": {f"{P}REPLICAS": "1"},
    "prefork x 2 (the spec before threads)": PREFORK,
    "prefork x prefetch 16": {**PREFORK, f"{P}PREFETCH_MULTIPLIER": "16"},
    "prefork x 4 children": {**PREFORK, f"{P}CONCURRENCY": "4"},
    "prefork x 2 processes x 1 child": {**PREFORK, f"{P}REPLICAS": "2", f"{P}CONCURRENCY": "1"},
    "log level warning": {"FLEET_LOG_LEVEL": "warning"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args()
    chosen = [v.strip() for v in args.only.split(",") if v.strip()] or list(VARIANTS)
    bench = Bench(sizes=QUICK if args.quick else FULL, work=Path(tempfile.mkdtemp(prefix="fleet-tune-")))
    runs: dict[str, list[float]] = {name: [] for name in chosen}
    for round_ in range(args.rounds):
        for name in chosen if round_ % 2 == 0 else chosen[::-1]:
            say(f"round {round_ + 1}/{args.rounds}: {name}")
            runs[name] += measure(bench, "tune", VARIANTS[name], with_drain=False)["runs"]
    print(f"{'variant':40} {'median tasks/s':>15}  runs")
    for name in chosen:
        print(f"{name:40} {median_of(runs[name]):15,.0f}  {', '.join(f'{r:,.0f}' for r in runs[name])}")


if __name__ == "__main__":
    main()
