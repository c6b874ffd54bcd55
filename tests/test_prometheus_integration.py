"""A real Prometheus scrapes one worker per pool and the API with the
committed rules loaded: after a mixed workload every dashboard query and every rule evaluates,
every panel returns data, and a killed worker shows as its pool being down, not as a ghost."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.celery_app import FleetCelery
from fleet.deploy.prometheus import API_JOB, scrape_config
from fleet.pools import POOLS, metrics_port
from fleet.settings import load_settings
from fleet.testing.ports import free_port
from fleet.testing.processes import start_workers
from queues import WORK_QUEUES
from tests.support.api import ApiServer
from tests.support.apps import app_for
from tests.support.metrics import private_fleet
from tests.support.peers import HTTPPeer
from tests.support.prometheus import RULES, Prometheus, dashboard_panels, panel_queries

EMAILS = 8


def _wait(predicate: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def observed(
    fleet_env: dict[str, str],
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    celery_app: FleetCelery,
    http_peer: HTTPPeer,
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("prometheus")
    with private_fleet(fleet_env, tmp) as env, app_for(env) as app:
        base = load_settings(env).metrics_port
        workers = start_workers(list(POOLS), env, log_dir)
        api = ApiServer(env, log_dir).start()
        config = tmp / "prometheus.yml"
        targets = {pool: [f"127.0.0.1:{metrics_port(base, pool)}"] for pool in POOLS}
        config.write_text(scrape_config(base, f"127.0.0.1:{api.port}", "1s", [str(RULES)], targets=targets))
        prometheus = Prometheus(config, tmp / "tsdb", free_port(), log_dir / "prometheus.log")
        try:
            prometheus.wait_ready()
            yield {
                "app": app,
                "workers": workers,
                "prometheus": prometheus,
                "api": api,
                "http_peer": http_peer,
            }
        finally:
            prometheus.stop()
            api.stop()
            for worker in workers.values():
                worker.stop()


def _mixed_workload(app: FleetCelery, api: ApiServer, http_peer: HTTPPeer) -> int:
    """Successes, failures and retries on every pool, the emails through the API; returns how many tasks ended."""
    http_peer.script("/payments", [200], {"charged": True})
    gone = http_peer.script("/prom-gone", [404])
    calls = [
        *[("tasks.process_payment", (f"prom-pay-{n}", "10.00", "card", "EUR")) for n in range(6)],
        ("tasks.process_payment", ("prom-pay-bad", "-1", "card", "EUR")),  # invalid: fails, dead-lettered
        *[("tasks.generate_report", ("sales", {"rows": 10})) for _ in range(2)],
        *[("tasks.process_data", (n,), {"rows": 100, "step_delay": 0}) for n in range(8)],
        *[("tasks.call_external_api", (gone,)) for _ in range(3)],
        *[("tasks.call_external_api", (http_peer.script(f"/prom-flaky-{n}", [503, 200]),)) for n in range(3)],
    ]
    results = [app.send_task(name, *rest) for name, *rest in calls]
    for n in range(EMAILS):
        answer = api.post("/api/tasks", {"task": "tasks.send_email", "args": [f"prom-{n}@example.test", "hi", "body"]})
        assert answer.status_code == 202, answer.text
        results.append(app.AsyncResult(answer.json()["task_id"]))
    for result in results:
        result.get(timeout=120, propagate=False)
    return len(results)


def _rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]


def test_dashboard_and_rules_evaluate_on_real_data_and_a_killed_worker_shows_its_pool_down(
    observed: dict[str, Any],
) -> None:
    prometheus: Prometheus = observed["prometheus"]
    # Throughput and Retries draw only series that moved in their window: Prometheus must have seen
    # every pool's zero series before the work starts, or a rate could not see the increase.
    _wait(
        lambda: len(prometheus.query("count by (pool) (fleet_tasks_retried_total)")["data"]["result"]) == len(POOLS),
        "a first scrape of every pool",
    )
    ended = _mixed_workload(observed["app"], observed["api"], observed["http_peer"])

    def scraped_all() -> bool:
        answer = prometheus.query("sum(fleet_tasks_succeeded_total) + sum(fleet_tasks_failed_total)")["data"]["result"]
        return bool(answer) and float(answer[0]["value"][1]) >= ended

    _wait(scraped_all, "Prometheus to scrape every outcome")
    time.sleep(3)  # a few more scrapes, so every rate has two points after the work
    up = prometheus.query('up{job="fleet-workers"} == 1')["data"]["result"]
    assert sorted(r["metric"]["pool"] for r in up) == sorted(POOLS)
    # the threads pools (email, default) count like the prefork ones
    threads = prometheus.query('fleet_worker_info{kind="threads"}')["data"]["result"]
    assert {r["metric"]["pool"] for r in threads} == {name for name, spec in POOLS.items() if spec.pool == "threads"}
    sent = prometheus.query('sum(fleet_tasks_succeeded_total{queue="email"})')["data"]["result"]
    assert float(sent[0]["value"][1]) == EMAILS

    # every dashboard query, with each queue for $queue: no error, and data
    checked = 0
    for queue in WORK_QUEUES:
        for title, expr in panel_queries(queue):
            answer = prometheus.query(expr)
            assert answer["status"] == "success", f"{title}: {expr}: {answer.get('error')}"
            assert answer["data"]["result"], f"panel {title!r} returns no data: {expr}"
            checked += 1
    # Throughput and Retries draw only the series that moved; the zero series stay for the alerts
    moving = {"Retries": "fleet_tasks_retried_total", "$queue: throughput": "fleet_tasks_succeeded_total"}
    for panel in dashboard_panels():
        if panel["title"] in moving:
            (target,) = panel["targets"]
            assert target["expr"].endswith(" > 0"), target["expr"]
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$queue", ".*")
            drawn = prometheus.query(expr)["data"]["result"]
            every = prometheus.query(expr.removesuffix(" > 0"))["data"]["result"]
            assert drawn and all(float(r["value"][1]) > 0 for r in drawn), expr
            assert len(every) > len(drawn), f"{panel['title']}: pre-created zero series are hidden"
            assert prometheus.query(f"count({moving[panel['title']]} == 0)")["data"]["result"], "zeros kept"
    published = prometheus.query('sum(fleet_api_tasks_published_total{task="tasks.send_email"})')["data"]["result"]
    assert float(published[0]["value"][1]) == EMAILS
    print(f"\n{checked} panel queries (4 queues) returned data")

    # every rule (recording and alerting) evaluated without error
    rules = _wait(
        lambda: (r := _rules(prometheus)) and all(x["lastEvaluation"][:4] != "0001" for x in r) and r, "rules"
    )
    assert len(rules) == len(re.findall(r"^      - (?:record|alert):", RULES.read_text(), re.M)) == 22
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

    # kill -9 the reports worker: its pool is down, and nothing of it lingers as a ghost
    pool_down = next(r["query"] for r in rules if r["name"] == "FleetPoolDown")
    assert prometheus.query(pool_down)["data"]["result"] == []
    observed["workers"]["reports"].kill()
    down = _wait(lambda: prometheus.query(pool_down)["data"]["result"], "the reports pool to show down", timeout=30)
    assert [r["metric"]["pool"] for r in down] == ["reports"]
    assert prometheus.query('fleet_worker_info{pool="reports"}')["data"]["result"] == []  # no ghost
    alerts = _wait(
        lambda: [a for a in prometheus.get("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == "FleetPoolDown"],
        "the FleetPoolDown alert",
        timeout=30,
    )
    assert [(a["labels"]["pool"], a["state"]) for a in alerts] in ([("reports", "pending")], [("reports", "firing")])
    assert prometheus.query(f'up{{job="{API_JOB}"}} == 1')["data"]["result"]
