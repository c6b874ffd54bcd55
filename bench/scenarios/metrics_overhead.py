"""metrics_overhead: the fleet scenario with worker metrics on, then off, then off, then on (ABBA).

Interleaving keeps the slow drift of a shared machine out of the difference.
Overhead is ``1 - on / off`` of the end-to-end medians.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from bench.harness import Bench, median_of, say
from bench.scenarios.fleet import measure


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
    on_env, off_env = envs
    order = [("on", on_env), ("off", off_env)]
    order += order[::-1]
    runs: dict[str, list[float]] = {"on": [], "off": []}
    for side, env in order:
        runs[side] += measure(bench, f"metrics-{side}", env, with_drain=False)["runs"]
    on, off = median_of(runs["on"]), median_of(runs["off"])
    say(f"metrics_overhead: on {on:,.0f}/s, off {off:,.0f}/s")
    return {
        "tasks_per_s": round(on, 1),
        "on": {"tasks_per_s": round(on, 1), "runs": runs["on"]},
        "off": {"tasks_per_s": round(off, 1), "runs": runs["off"]},
        "overhead": round(1 - on / off, 3),
    }
