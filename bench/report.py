"""Turning one run's figures into latest.json, latest.png and the table in docs/PERFORMANCE.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.harness import ROOT

RESULTS = ROOT / "bench" / "results"
PERFORMANCE_MD = ROOT / "docs" / "PERFORMANCE.md"
TABLE_START = "<!-- bench:table:start (written by make bench; edit bench/report.py, not this table) -->"
TABLE_END = "<!-- bench:table:end -->"

#: ratio -> (goal, "at least", "at most" or "below", what it compares)
GOALS: dict[str, tuple[float, str, str]] = {
    "fleet_vs_celery_defaults": (2.0, "at least", "fleet end to end / celery_defaults end to end"),
    "fleet_vs_dramatiq": (1.0, "at least", "fleet end to end / dramatiq end to end"),
    "fleet_vs_ceiling": (0.6, "at least", "fleet end to end / raw py-amqp end to end (moonshot)"),
    "cpu_per_task_vs_dramatiq": (
        1.0,
        "at most",
        "worker CPU per no-op task, every worker process (/proc): fleet / dramatiq",
    ),
    "results_vs_celery_defaults": (
        2.0,
        "at least",
        "tasks storing results in SQLite (fleet's default backend): fleet / plain Celery defaults, alternating",
    ),
    "results_vs_celery_defaults_redis": (
        2.0,
        "at least",
        "the same with Redis as both sides' backend",
    ),
    "cpu_bound_efficiency": (0.9, "at least", "~5 ms pure-Python tasks on `default`: tasks/s / (cores / task CPU)"),
    "io_bound_efficiency": (0.9, "at least", "20 ms waits on `email`: tasks/s / (concurrency / 0.02 s)"),
    "batch_vs_ceiling": (
        0.8,
        "at least",
        "publish_many (batches of 1000) / raw py-amqp confirmed publish, alternating in one scenario",
    ),
    "api_vs_naive": (1.0, "at least", "fleet API confirmed enqueues/s / naive Flask + delay() requests/s"),
    "api_enqueue.p99_ms": (50, "below", "fleet API `POST /api/tasks` p99 (ms) under wrk's 16 connections"),
    "api_batch_vs_ceiling": (
        0.8,
        "at least",
        "fleet API batch endpoint, confirmed tasks/s / raw py-amqp confirmed publish, alternating in one scenario",
    ),
    "metrics_overhead": (
        0.05,
        "at most",
        "worker CPU per task, metrics on / off, minus 1: median of rounds with both consuming at once",
    ),
    "priority_under_flood.p99_ms": (50, "below", "high_priority enqueue-to-start p99 (ms) under the 3 x 10k flood"),
}


def _get(results: dict[str, Any], path: str) -> float | None:
    value: Any = results
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value) else None


def _ratio(results: dict[str, Any], top: str, bottom: str) -> float | None:
    a, b = _get(results, top), _get(results, bottom)
    return round(a / b, 3) if a is not None and b else None


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """The goal figures; each is None when its scenario failed or did not run, never an exception."""
    return {
        "fleet_vs_celery_defaults": _ratio(results, "fleet.tasks_per_s", "celery_defaults.tasks_per_s"),
        "fleet_vs_dramatiq": _ratio(results, "fleet.tasks_per_s", "dramatiq.tasks_per_s"),
        "fleet_vs_ceiling": _ratio(results, "fleet.tasks_per_s", "ceiling_raw_amqp.tasks_per_s"),
        "cpu_per_task_vs_dramatiq": _ratio(results, "fleet.cpu_us_per_task", "dramatiq.cpu_us_per_task"),
        "results_vs_celery_defaults": _get(results, "results.sqlite.ratio"),
        "results_vs_celery_defaults_redis": _get(results, "results.redis.ratio"),
        "cpu_bound_efficiency": _get(results, "cpu_bound.efficiency"),
        "io_bound_efficiency": _get(results, "io_bound.efficiency"),
        "api_vs_naive": _ratio(results, "api_enqueue.requests_per_s", "api_enqueue.naive.requests_per_s"),
        "api_enqueue.p99_ms": _get(results, "api_enqueue.p99_ms"),
        "api_batch_vs_ceiling": _ratio(
            results, "api_enqueue.batch.tasks_per_s", "api_enqueue.batch.raw_confirmed_per_s"
        ),
        "batch_vs_ceiling": _ratio(results, "transport.publish_many_per_s", "transport.raw_confirmed_per_s"),
        "metrics_overhead": _get(results, "metrics_overhead.overhead"),
        "priority_under_flood.p99_ms": _get(results, "priority_under_flood.p99_ms"),
    }


def met(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    goal, sense, _ = GOALS[name]
    ok = value >= goal if sense == "at least" else value <= goal if sense == "at most" else value < goal
    return "yes" if ok else "no"


def build(results: dict[str, Any], facts: dict[str, Any], partial: bool) -> dict[str, Any]:
    return {"machine": facts, "scenarios": results, "ratios": ratios(results), "partial": partial}


def as_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, default=str) + "\n"


def headline(result: dict[str, Any]) -> str:
    """One line for the progress output."""
    if result.get("status") != "measured":
        return f"{result.get('status')}: {result.get('error') or result.get('reason', '')}"
    parts = []
    keys = ("tasks_per_s", "requests_per_s", "publish_many_per_s", "p50_ms", "p99_ms", "overhead", "cpu_us_per_task")
    for key in (*keys, "efficiency"):
        if key in result and result[key] is not None:
            parts.append(f"{key}={result[key]:,}")
    return ", ".join(parts) or "measured"


def write(document: dict[str, Any]) -> list[Path]:
    """A full run writes latest.*; a partial one (--only) writes partial.json and leaves the rest."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if document["partial"]:
        path = RESULTS / "partial.json"
        path.write_text(as_json(document))
        return [path]
    (RESULTS / "latest.json").write_text(as_json(document))
    from bench.chart import draw

    draw(document, RESULTS / "latest.png")
    write_table(document)
    return [RESULTS / "latest.json", RESULTS / "latest.png", PERFORMANCE_MD]


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:,.2f}{unit}"


#: (scenario, label, json path under the scenario, unit)
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("ceiling_raw_amqp", "raw py-amqp, end to end (publish + consume at once)", "tasks_per_s", "/s"),
    ("ceiling_raw_amqp", "raw py-amqp, confirmed publish (window 1000)", "publish_per_s", "/s"),
    ("ceiling_raw_amqp", "raw py-amqp, drain (consumer acking each)", "drain_per_s", "/s"),
    ("transport", "kombu + py-amqp, unconfirmed publish", "pyamqp_unconfirmed_per_s", "/s"),
    ("transport", "kombu + py-amqp, confirmed one by one", "pyamqp_confirmed_per_s", "/s"),
    ("transport", "fleet publish_many, batches of 1000", "publish_many_per_s", "/s"),
    ("transport", "raw py-amqp confirmed publish, alternating with those batches", "raw_confirmed_per_s", "/s"),
    ("transport", "fleet publish_many, batches of 100 (bulk email fan-out)", "publish_many_100_per_s", "/s"),
    ("transport", "kombu + librabbitmq, unconfirmed publish", "librabbitmq_unconfirmed_per_s", "/s"),
    ("celery_defaults", "plain Celery defaults, end to end", "tasks_per_s", "/s"),
    ("celery_defaults", "plain Celery defaults, drain", "drain.tasks_per_s", "/s"),
    ("celery_defaults", "plain Celery defaults, worker CPU per task (end to end)", "cpu_us_per_task", " µs"),
    ("celery_threads", "plain Celery on `default`'s shape (processes x threads), end to end", "tasks_per_s", "/s"),
    ("celery_threads", "plain Celery on `default`'s shape, worker CPU per task (end to end)", "cpu_us_per_task", " µs"),
    ("dramatiq", "Dramatiq defaults, end to end", "tasks_per_s", "/s"),
    ("dramatiq", "Dramatiq defaults, worker CPU per task (end to end)", "cpu_us_per_task", " µs"),
    ("fleet", "fleet `default` pool, end to end", "tasks_per_s", "/s"),
    ("fleet", "fleet `default` pool, drain", "drain.tasks_per_s", "/s"),
    ("fleet", "fleet `default` pool, worker CPU per task (end to end)", "cpu_us_per_task", " µs"),
    ("results", "fleet, tasks storing results in SQLite (default backend)", "sqlite.fleet.tasks_per_s", "/s"),
    ("results", "plain Celery defaults, results in SQLite", "sqlite.celery_defaults.tasks_per_s", "/s"),
    ("results", "fleet, tasks storing results in Redis", "redis.fleet.tasks_per_s", "/s"),
    ("results", "plain Celery defaults, results in Redis", "redis.celery_defaults.tasks_per_s", "/s"),
    ("cpu_bound", "`default` pool, ~5 ms pure-Python tasks", "tasks_per_s", "/s"),
    ("cpu_bound", "ideal for those: cores / task CPU time", "ideal_per_s", "/s"),
    ("cpu_bound", "task CPU time (median, measured in the task)", "task_cpu_ms", " ms CPU"),
    ("cpu_bound", "CPU the pool got / wall time / cores (the rest went to other load)", "worker_cpu_share", ""),
    ("cpu_bound", "task CPU / the pool's CPU (the rest is the worker's per-task path)", "task_share_of_worker_cpu", ""),
    ("io_bound", "`email` pool, 20 ms waits", "tasks_per_s", "/s"),
    ("io_bound", "ideal for those: concurrency / 0.02 s", "ideal_per_s", "/s"),
    ("io_bound", "CPU the pool got / wall time / cores", "worker_cpu_share", ""),
    ("metrics_overhead", "fleet, metrics off, consuming beside the metrics-on worker", "off.tasks_per_s", "/s"),
    ("metrics_overhead", "fleet, metrics on, consuming beside the metrics-off worker", "on.tasks_per_s", "/s"),
    ("metrics_overhead", "worker CPU per task, metrics off", "off.cpu_us_per_task", " µs"),
    ("metrics_overhead", "worker CPU per task, metrics on", "on.cpu_us_per_task", " µs"),
    ("priority_under_flood", "high_priority enqueue-to-start p50 under flood", "p50_ms", " ms"),
    ("priority_under_flood", "high_priority enqueue-to-start p99 under flood", "p99_ms", " ms"),
    ("api_enqueue", "fleet API (gunicorn, gevent), confirmed enqueues", "requests_per_s", "/s"),
    ("api_enqueue", "fleet API p50 / p99", "p50_ms", " ms"),
    ("api_enqueue", "fleet API batch endpoint, confirmed tasks", "batch.tasks_per_s", "/s"),
    ("api_enqueue", "naive Flask + delay() (gunicorn, gthread), requests", "naive.requests_per_s", "/s"),
    ("api_enqueue", "naive with Celery's confirms (`confirm_publish`)", "naive_confirmed.requests_per_s", "/s"),
    ("api_enqueue", "naive on gevent workers, as `fleet api` serves", "naive_gevent.requests_per_s", "/s"),
    ("api_enqueue", "raw py-amqp confirmed publish, beside the batch endpoint", "batch.raw_confirmed_per_s", "/s"),
)


def _cell(results: dict[str, Any], scenario: str, path: str, unit: str) -> str:
    result = results.get(scenario)
    if result is None:
        return "not run"
    if result.get("status") != "measured":
        return f"{result.get('status')}"
    part = result.get(path.split(".")[0])
    if isinstance(part, dict) and part.get("status") == "failed":  # one backend of results
        return "failed"
    value = _cell_value(result, path, unit)
    if path == "p50_ms" and scenario == "api_enqueue":
        value += f" / {_fmt(_get(result, 'p99_ms'), ' ms')}"
    return value


def _cell_value(result: dict[str, Any], path: str, unit: str) -> str:
    value = _get(result, path)
    if value is None:
        reason = result.get(path.split(".")[0].removesuffix("_per_s") + "_reason") or ""
        return f"— {reason}".strip()
    return _fmt(value, unit)


def _queue_mode(broker: dict[str, Any]) -> str:
    """The queue mode a run's policy set, for the run line (runs before it set none)."""
    mode = (broker.get("policy") or {}).get("definition", {}).get("queue-mode")
    return f" with {mode} queues" if mode else ""


def table(document: dict[str, Any]) -> str:
    results, facts = document["scenarios"], document["machine"]
    lines = [
        f"Run: {facts['when']}, commit {facts['commit']}, `{facts['run']}` sizes, {facts['cores']} cores "
        f"({facts['cpu']}), RabbitMQ {facts['rabbitmq'].get('version')}{_queue_mode(facts['rabbitmq'])}, "
        f"Python {facts['python']}, "
        f"Celery {facts['packages'].get('celery')}, kombu {facts['packages'].get('kombu')}, "
        f"amqp {facts['packages'].get('amqp')}, Dramatiq {facts['packages'].get('dramatiq')}; "
        f"load average at the end {facts['load_average_end']}. Medians of {facts['sizes']['repeats']} repeats.",
        "",
        "| scenario | figure | median |",
        "| --- | --- | --- |",
    ]
    for scenario, label, path, unit in ROWS:
        lines.append(f"| {scenario} | {label} | {_cell(results, scenario, path, unit)} |")
    lines += ["", "| goal figure | measured | goal | met | compares |", "| --- | --- | --- | --- | --- |"]
    for name, value in document["ratios"].items():
        goal, sense, what = GOALS[name]
        verdict = met(name, value)
        if name == "metrics_overhead" and (results.get(name) or {}).get("decides_goal") is False:
            verdict = "undecided: the 95% CI spans the goal"
        lines.append(f"| {name} | {_fmt(value)}{_detail(name, results)} | {sense} {goal:g} | {verdict} | {what} |")
    return "\n".join(lines)


def _detail(name: str, results: dict[str, Any]) -> str:
    """The spread behind a goal figure that needs one to be read (metrics overhead's confidence interval)."""
    if name != "metrics_overhead":
        return ""
    figures = results.get("metrics_overhead") or {}
    ci = figures.get("overhead_ci95")
    if not ci:
        return ""
    throughput = figures.get("throughput_overhead_ci95") or [None, None]
    text = f" (95% CI {ci[0]:+.3f} to {ci[1]:+.3f}, {figures.get('rounds')} rounds"
    if None not in throughput:
        text += (
            f"; throughput {figures.get('throughput_overhead'):+.3f}, CI {throughput[0]:+.3f} to {throughput[1]:+.3f}"
        )
    return text + ")"


def write_table(document: dict[str, Any]) -> None:
    text = PERFORMANCE_MD.read_text() if PERFORMANCE_MD.exists() else f"# Performance\n\n{TABLE_START}\n{TABLE_END}\n"
    head, found, rest = text.partition(TABLE_START)
    if not found:
        head, rest = text.rstrip() + "\n\n", f"\n{TABLE_END}\n"
    _, _, tail = rest.partition(TABLE_END)
    PERFORMANCE_MD.write_text(f"{head}{TABLE_START}\n{table(document)}\n{TABLE_END}{tail}")
