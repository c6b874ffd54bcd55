"""The committed alert rules and dashboard: promtool checks and unit tests, and what they must cover."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.prometheus import (
    DASHBOARD,
    PROMETHEUS_DIR,
    RULE_TESTS,
    RULES,
    alert_names,
    dashboard_panels,
    promtool,
)

pytestmark = pytest.mark.pure  # the fast tier: no service needed


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    for args in (("check", "rules", str(RULES)), ("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_the_issue_asks_for_exists_and_has_a_unit_test() -> None:
    alerts = alert_names(RULES.read_text())
    assert len(alerts) == len(set(alerts))
    assert set(alerts) == {
        "FleetHighPriorityQueueWaitSLO",  # queue wait SLO, tighter on high_priority
        "FleetQueueWaitSLO",
        "FleetQueueBacklogGrowing",
        "FleetQueueWithoutConsumers",
        "FleetPoolSaturated",
        "FleetTaskStuck",  # beyond its time limit
        "FleetWorkerHeartbeatStale",
        "FleetPoolDown",  # pool absent, static targets
        "FleetPoolAbsent",  # pool absent, discovered targets
        "FleetTaskFailureRate",
        "FleetRetryStorm",
        "FleetWorkerLostSpike",
        "FleetApiPublishErrors",
        "FleetDeadLettersAccumulating",
        "FleetMetricsScrapeFailing",
        "FleetQueueMetricsErrors",
        "FleetBeatDown",  # no beat leads
        "FleetPeriodicTaskMissed",
    }
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert set(alerts) <= tested, f"alerts without a promtool test: {set(alerts) - tested}"


def test_dashboard_is_import_ready_with_the_panels_asked_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["uid"] and dashboard["title"] == "fleet"
    panels = dashboard_panels()
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"] for p in panels)
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert any(r.get("repeat") == "queue" for r in rows), "one row per queue"
    titles = " | ".join(p["title"] for p in panels)
    for wanted in (
        "$queue: ready + reserved + active",
        "$queue: queue wait p50 / p95 / p99 vs SLO",
        "$queue: throughput",
        "$queue: failures",
        "Pool saturation",
        "Task runtime p50 / p95 / p99",
        "Retries",
        "Dead letters",
        "Child churn",
        "API publish latency",
        "API publish errors",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
