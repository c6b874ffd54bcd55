"""`python -m bench [--quick] [--only a,b] [--set KEY=VALUE]`: run the scenarios, write the results.

Writes bench/results/latest.json, bench/results/latest.png and the table in
docs/PERFORMANCE.md. ``--only`` runs some scenarios and keeps the others'
last figures; ``--set`` passes an environment override to every fleet process
(e.g. FLEET_POOL_DEFAULT_PREFETCH_MULTIPLIER=16) when exploring a tuning.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import report
from bench.harness import FULL, QUICK, Bench, say
from bench.machine import load_average, machine_facts

#: run order: the ceiling first, while the machine is calmest
SCENARIOS = (
    "ceiling_raw_amqp",
    "transport",
    "celery_defaults",
    "celery_threads",
    "dramatiq",
    "fleet",
    "results",
    "cpu_bound",
    "io_bound",
    "metrics_overhead",
    "priority_under_flood",
    "api_enqueue",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about five to seven minutes")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="env override")
    parser.add_argument("--no-write", action="store_true", help="print results, write nothing (exploring)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    overrides = dict(item.split("=", 1) for item in args.set)
    sizes = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    bench = Bench(sizes=sizes, work=work, overrides=overrides)
    say(f"bench: {'quick' if args.quick else 'full'} run of {', '.join(chosen)}; logs in {work / 'log'}")
    started = time.time()
    results: dict[str, dict] = {}
    for index, name in enumerate(chosen, 1):
        say(f"[{index}/{len(chosen)}] {name} (load average {load_average()})")
        before = load_average()
        t0 = time.monotonic()
        try:
            result = importlib.import_module(f"bench.scenarios.{name}").run(bench)
        except Exception as exc:  # noqa: BLE001 - one failing scenario must not hide the others' figures
            traceback.print_exc()
            result = {"status": "failed", "error": repr(exc)}
        finally:
            bench.stop_all()
        result.setdefault("status", "measured")
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["load_average"] = {"before": before, "after": load_average()}
        results[name] = result
        say(f"{name}: {report.headline(result)}")
    facts = machine_facts(sizes_name="quick" if args.quick else "full", sizes=sizes, overrides=overrides)
    facts["duration_s"] = round(time.time() - started, 1)
    document = report.build(results, facts, partial=bool(args.only))
    if args.no_write:
        print(report.as_json(document))
    else:
        for path in report.write(document):
            say(f"wrote {path}")
    say(f"bench: done in {facts['duration_s']:.0f}s")
    return 0 if all(r.get("status") != "failed" for r in results.values()) else 1


if __name__ == "__main__":
    os.environ.pop("CELERY_BROKER_URL", None)  # each scenario names its own vhost
    sys.exit(main())
