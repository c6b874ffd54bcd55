"""A real Prometheus scrapes one worker per pool (and the API when it serves /metrics) with the
committed rules loaded: after a mixed workload every dashboard query and every rule evaluates,
every panel returns data, and a killed worker shows as its pool being down, not as a ghost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fleet.celery_app import FleetCelery
from fleet.metrics.prometheus import API_JOB, scrape_config
from fleet.pools import POOLS, metrics_port
from fleet.settings import load_settings
from queues import WORK_QUEUES
from tests.support.metrics import app_for, private_fleet
from tests.support.peers import HTTPPeer, free_port
from tests.support.processes import FLEET, FleetProcess, start_workers
from tests.support.prometheus import RULES, Prometheus, panel_queries

API_METRIC = "fleet_api_"
EMAILS = 8


def _wait(predicate: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _start_api(env: dict[str, str], log_dir: Path) -> tuple[FleetProcess, str | None]:
    """``fleet api``; returns it and its address if it serves Prometheus metrics on /metrics."""
    address = f"127.0.0.1:{free_port()}"
    api = FleetProcess([FLEET, "api"], {**env, "FLEET_API_BIND": address}, log_dir / "api-prometheus.log").start()

    def answers() -> int | None:
        try:
            return requests.get(f"http://{address}/metrics", timeout=2).status_code
        except requests.RequestException:
            return None

    status = _wait(answers, "the API to answer", timeout=60)
    return api, address if status == 200 else None


@pytest.fixture(scope="module")
def observed(
    fleet_env: dict[str, str],
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    celery_app: FleetCelery,
    http_peer: HTTPPeer,
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("prometheus")
    with private_fleet(fleet_env, tmp) as env, app_for(env, celery_app) as app:
        base = load_settings(env).metrics_port
        workers = start_workers(list(POOLS), env, log_dir)
        api, api_address = _start_api(env, log_dir)
        config = tmp / "prometheus.yml"
        targets = {pool: [f"127.0.0.1:{metrics_port(base, pool)}"] for pool in POOLS}
        config.write_text(scrape_config(base, api_address, "1s", [str(RULES)], targets=targets))
        prometheus = Prometheus(config, tmp / "tsdb", free_port(), log_dir / "prometheus.log")
        try:
            prometheus.wait_ready()
            yield {
                "app": app,
                "workers": workers,
                "prometheus": prometheus,
                "api": api_address,
                "http_peer": http_peer,
            }
        finally:
            prometheus.stop()
            api.stop()
            for worker in workers.values():
                worker.stop()


def _mixed_workload(app: FleetCelery, http_peer: HTTPPeer) -> int:
    """Successes, failures and retries on every pool; returns how many tasks ended."""
    http_peer.script("/payments", [200], {"charged": True})
    gone = http_peer.script("/prom-gone", [404])
    calls = [
        *[("tasks.process_payment", (f"prom-pay-{n}", "10.00", "EUR")) for n in range(6)],
        ("tasks.process_payment", ("prom-pay-bad", "-1", "EUR")),  # invalid: fails, dead-lettered
        *[("tasks.send_email", (f"prom-{n}@example.test", "hi", "body")) for n in range(EMAILS)],
        *[("tasks.generate_report", ("sales", 10)) for _ in range(2)],
        *[("tasks.process_data", (n,), {"rows": 100}) for n in range(8)],
        *[("tasks.call_external_api", (gone,)) for _ in range(3)],
        *[("tasks.call_external_api", (http_peer.script(f"/prom-flaky-{n}", [503, 200]),)) for n in range(3)],
    ]
    results = [app.send_task(name, *rest) for name, *rest in calls]
    for result in results:
        result.get(timeout=120, propagate=False)
    return len(results)


def _rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]


def test_dashboard_and_rules_evaluate_on_real_data_and_a_killed_worker_shows_its_pool_down(
    observed: dict[str, Any],
) -> None:
    prometheus: Prometheus = observed["prometheus"]
    ended = _mixed_workload(observed["app"], observed["http_peer"])

    def scraped_all() -> bool:
        answer = prometheus.query("sum(fleet_tasks_succeeded_total) + sum(fleet_tasks_failed_total)")["data"]["result"]
        return bool(answer) and float(answer[0]["value"][1]) >= ended

    _wait(scraped_all, "Prometheus to scrape every outcome")
    time.sleep(3)  # a few more scrapes, so every rate has two points after the work
    up = prometheus.query('up{job="fleet-workers"} == 1')["data"]["result"]
    assert sorted(r["metric"]["pool"] for r in up) == sorted(POOLS)
    # the threads pool (email) counts like the prefork ones
    threads = prometheus.query('fleet_worker_info{kind="threads"}')["data"]["result"]
    assert [r["metric"]["pool"] for r in threads] == ["email"]
    sent = prometheus.query('sum(fleet_tasks_succeeded_total{queue="email"})')["data"]["result"]
    assert float(sent[0]["value"][1]) == EMAILS

    # every dashboard query, with each queue for $queue: no error, and data
    checked, skipped = 0, []
    for queue in WORK_QUEUES:
        for title, expr in panel_queries(queue):
            if API_METRIC in expr and not observed["api"]:
                skipped.append(title)
                continue
            answer = prometheus.query(expr)
            assert answer["status"] == "success", f"{title}: {expr}: {answer.get('error')}"
            assert answer["data"]["result"], f"panel {title!r} returns no data: {expr}"
            checked += 1
    print(f"\n{checked} panel queries returned data; API panels skipped (no /metrics on `fleet api`): {set(skipped)}")

    # every rule (recording and alerting) evaluated without error
    rules = _wait(
        lambda: (r := _rules(prometheus)) and all(x["lastEvaluation"][:4] != "0001" for x in r) and r, "rules"
    )
    assert len(rules) == 20
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
    if observed["api"]:
        assert prometheus.query(f'up{{job="{API_JOB}"}} == 1')["data"]["result"]
