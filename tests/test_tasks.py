"""The tasks doing real work against loopback peers, run by the real pools."""

from __future__ import annotations

import time

import pytest
from celery.result import AsyncResult
from celery.states import READY_STATES

from fleet.celery_app import FleetCelery
from fleet.retries import backoff_delay
from fleet.tasks.workflows import etl_pipeline, fetch_all, parallel_etl
from fleet.testing.broker import drain
from tests.support.peers import HTTPPeer, SMTPPeer

pytestmark = pytest.mark.usefixtures("fleet_workers")


def watch(result: AsyncResult, timeout: float = 60) -> list[tuple[str, object]]:
    """Poll a task's state until it is ready; return every (state, meta) seen."""
    seen: list[tuple[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = result.backend.get_task_meta(result.id)  # one read: state and info agree
        state, info = meta["status"], meta["result"]
        if not seen or seen[-1] != (state, info):
            seen.append((state, info))
        if state in READY_STATES:
            return seen
        time.sleep(0.005)
    raise AssertionError(f"{result.id} not ready within {timeout}s; seen {seen}")


def test_send_email_delivers_over_smtp(celery_app: FleetCelery, smtp: SMTPPeer) -> None:
    result = celery_app.send_task("tasks.send_email", ("ada@example.test", "Welcome", "Hello Ada"))
    assert result.get(timeout=30)["status"] == "success"
    [message] = smtp.wait_for("ada@example.test")
    assert message["Subject"] == "Welcome"
    assert message["Message-ID"] == f"<{result.id}@fleet>"
    assert message.get_payload().strip() == "Hello Ada"


def test_bulk_emails_fan_out_with_progress(celery_app: FleetCelery, smtp: SMTPPeer) -> None:
    recipients = [f"bulk-{n}@example.test" for n in range(1000)]
    result = celery_app.send_task("tasks.send_bulk_emails", (recipients, "News", "Hi"))
    seen = watch(result)
    progress = [info for state, info in seen if state == "PROGRESS"]
    assert progress, f"no PROGRESS observed: {seen}"
    assert all(set(meta) >= {"current", "total", "percent"} and meta["total"] == 1000 for meta in progress)
    outcome = result.get(timeout=10)
    assert outcome["total"] == 1000 and len(set(outcome["task_ids"])) == 1000
    for address in (recipients[0], recipients[-1]):
        smtp.wait_for(address, timeout=180)  # 1,000 SMTP sessions on a shared 2-core machine


def test_process_data_reports_named_steps(celery_app: FleetCelery) -> None:
    result = celery_app.send_task("tasks.process_data", (42,), {"rows": 5000, "step_delay": 0.3})
    seen = watch(result)
    steps = [info["step"] for state, info in seen if state == "PROGRESS"]
    assert len(set(steps)) >= 2 and set(steps) <= {"validating", "transforming", "analyzing", "saving"}, seen
    outcome = result.get(timeout=10)
    assert outcome["status"] == "completed" and outcome["steps_completed"] == 4 and outcome["count"] > 4900


def test_backoff_windows_grow() -> None:
    for retries in range(5):
        low = backoff_delay(retries, base=1, cap=100, rand=lambda: 0.0)
        high = backoff_delay(retries, base=1, cap=100, rand=lambda: 1.0)
        assert low == 2**retries / 2 and high == 2**retries
        assert backoff_delay(retries + 1, base=1, cap=100, rand=lambda: 0.0) >= high  # next wait >= this one's longest


def test_call_external_api_retries_with_growing_delays(celery_app: FleetCelery, http_peer: HTTPPeer) -> None:
    url = http_peer.script("/flaky", [500, 503, 200], {"value": 7})
    result = celery_app.send_task("tasks.call_external_api", (url,))
    outcome = result.get(timeout=60)
    assert result.state == "SUCCESS"
    assert outcome == {"status_code": 200, "body": {"value": 7}, "attempts": 3}
    first, second, third = (hit.at for hit in http_peer.hits_for("/flaky"))
    # FLEET_RETRY_BACKOFF_BASE=0.5: the first wait is 0.25-0.5 s, the second 0.5-1 s.
    assert 0.25 <= second - first and 0.5 <= third - second


def test_send_webhook_returns_failed_after_its_retries(celery_app: FleetCelery, http_peer: HTTPPeer) -> None:
    url = http_peer.script("/down", [503])
    outcome = celery_app.send_task("tasks.send_webhook", (url, {"event": "ping"})).get(timeout=60)
    assert outcome["status"] == "failed" and outcome["attempts"] == 4
    assert len(http_peer.hits_for("/down")) == 4


def test_payment_validation_errors_are_never_retried(celery_app: FleetCelery, http_peer: HTTPPeer, settings) -> None:
    http_peer.script("/payments", [200])
    result = celery_app.send_task("tasks.process_payment", ("pay-bad", "-5", "card", "EUR"))
    with pytest.raises(Exception, match="amount must be above 0"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert http_peer.hits_for("/payments") == []
    # What cannot succeed is dead-lettered where an operator can see it.
    deadline = time.monotonic() + 10
    dead: list = []
    while not dead and time.monotonic() < deadline:
        dead = [m for m in drain(settings.broker_url, "high_priority.dlq") if m.headers["id"] == result.id]
        time.sleep(0.2)
    assert dead, "the failed payment is in high_priority.dlq"


def test_payment_transient_errors_are_retried_idempotently(celery_app: FleetCelery, http_peer: HTTPPeer) -> None:
    http_peer.script("/payments", [503, 200], {"charged": True})
    outcome = celery_app.send_task("tasks.process_payment", ("pay-77", "19.99", "card", "USD")).get(timeout=30)
    assert outcome["status"] == "success" and outcome["order_id"] == "pay-77" and outcome["amount"] == "19.99"
    assert outcome["transaction_id"] and outcome["currency"] == "USD"
    hits = http_peer.hits_for("/payments")
    assert len(hits) == 2
    assert {hit.headers["Idempotency-Key"] for hit in hits} == {"pay-77"}


def test_report_is_a_real_file(celery_app: FleetCelery) -> None:
    outcome = celery_app.send_task("tasks.generate_report", ("usage",), {"rows": 250}).get(timeout=30)
    with open(outcome["path"]) as report:
        lines = report.read().splitlines()
    assert lines[0] == "line,account,quantity,amount" and len(lines) == 251
    assert outcome["size_bytes"] == sum(len(line) + 2 for line in lines)  # csv writes \r\n


def test_chain_group_and_chord(celery_app: FleetCelery) -> None:
    single = etl_pipeline(1, 50).apply_async().get(timeout=30)
    assert single["source_id"] == 1 and single["records"] + single["invalid"] == 50
    fetched = fetch_all([1, 2, 3], 10).apply_async().get(timeout=30)
    assert [batch["source_id"] for batch in fetched] == [1, 2, 3]
    singles = [etl_pipeline(n, 50).apply_async().get(timeout=30) for n in (2, 3)]
    aggregate = parallel_etl([1, 2, 3], 50).apply_async().get(timeout=60)
    assert aggregate["sources"] == [1, 2, 3]
    assert aggregate["records"] == sum(s["records"] for s in [single, *singles])
    assert aggregate["total_cents"] == sum(s["total_cents"] for s in [single, *singles])
