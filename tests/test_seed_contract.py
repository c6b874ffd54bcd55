"""The three guides fleet grew from, called exactly as their own client code calls them.

Every request body below is copied from the guides in ``../shared/seeds/``
(not built from fleet's schemas); each goes to a live ``fleet api`` (gunicorn)
with real workers on RabbitMQ, and each test asserts the guide's documented
answer and the final state and result shape. Task calls use the guides' names,
argument names and arguments.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fleet.celery_app import FleetCelery
from fleet.testing.processes import FleetProcess
from tests.support.api import ApiServer
from tests.support.peers import HTTPPeer, SMTPPeer

#: The guides poll at human speed; PROGRESS must be visible at this poll.
POLL = 0.3


@pytest.fixture(scope="module")
def api(fleet_env: dict[str, str], log_dir: Path, fleet_workers: object) -> Iterator[ApiServer]:
    # The guides' clients send no token: the API runs as they expect, without FLEET_API_TOKEN.
    server = ApiServer(fleet_env, log_dir).start()
    yield server
    server.stop()


def poll(api: ApiServer, path: str, until: set[str], key: str, timeout: float = 60) -> list[dict[str, Any]]:
    """GET ``path`` every POLL seconds until ``body[key]`` is in ``until``; every answer, in order."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.get(path)
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if seen[-1][key] in until:
            return seen
        time.sleep(POLL)
    raise AssertionError(f"{path}: {key} never in {until} within {timeout}s; last {seen[-1:]}")


def accepted(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["task_id"], str) and body["task_id"]
    return body


# -- guide 000: /run-task and /task-status -----------------------------------------------


def test_guide_000_run_task_then_task_status(api: ApiServer) -> None:
    # data = request.get_json(); long_running_task.apply_async(args=[data.get('duration', 5)])
    body = accepted(api.post("/run-task", {"duration": 2}))
    assert body["status"] == "Task started"  # jsonify({"task_id": task.id, "status": "Task started"}), 202
    assert body["task"] == "tasks.long_running_task" and body["queue"] == "default"
    seen = poll(api, f"/task-status/{body['task_id']}", {"SUCCESS", "FAILURE", "REVOKED"}, "status")
    final = seen[-1]
    # jsonify({"task_id": task_id, "status": task.state, "result": task.result})
    assert final["task_id"] == body["task_id"]
    assert final["status"] == "SUCCESS", final
    assert final["result"] == "Task completed in 2 seconds"
    assert "STARTED" in [answer["status"] for answer in seen], seen  # 2 s at a 0.3 s poll: seen running


def test_run_task_keeps_the_generic_form(api: ApiServer) -> None:
    body = accepted(api.post("/run-task", {"task": "tasks.add", "args": [16, 16]}))
    assert body["status"] == "queued" and body["task"] == "tasks.add"
    final = poll(api, f"/task-status/{body['task_id']}", {"SUCCESS", "FAILURE"}, "status")[-1]
    assert final["status"] == "SUCCESS" and final["result"] == 32


# -- guide 001: the API blueprint ----------------------------------------------------------


def test_guide_001_send_email(api: ApiServer, smtp: SMTPPeer) -> None:
    # tests/test_integration.py of the guide: client.post('/api/send-email', json={...})
    response = api.post("/api/send-email", {"recipient": "test@example.com", "subject": "Test", "body": "Test body"})
    body = accepted(response)
    assert body["message"] == "Email queued for sending"
    final = poll(api, f"/api/task-status/{body['task_id']}", {"SUCCESS", "FAILURE"}, "state")[-1]
    assert final["state"] == "SUCCESS", final
    assert isinstance(final["status"], str) and final["status"]
    # return {'status': 'success', 'recipient': recipient, 'subject': subject}
    assert {key: final["result"][key] for key in ("status", "recipient", "subject")} == {
        "status": "success",
        "recipient": "test@example.com",
        "subject": "Test",
    }
    assert any(message["Subject"] == "Test" for message in smtp.wait_for("test@example.com"))


def test_guide_001_bulk_emails_default_subject_and_body(api: ApiServer, smtp: SMTPPeer) -> None:
    # subject=data.get('subject', 'No Subject'), body=data.get('body', '')
    recipients = [f"guide-bulk-{n}-{uuid.uuid4().hex[:6]}@example.com" for n in range(2)]
    body = accepted(api.post("/api/send-bulk-emails", {"recipients": recipients}))
    assert body["message"] == "Queued 2 emails"
    final = poll(api, f"/api/task-status/{body['task_id']}", {"SUCCESS", "FAILURE"}, "state")[-1]
    assert final["state"] == "SUCCESS", final
    result = final["result"]
    assert (result["status"], result["total"], result["sent"], result["failed"]) == ("completed", 2, 2, [])
    for address in recipients:
        assert smtp.wait_for(address)[0]["Subject"] == "No Subject"


def test_guide_001_process_data_shows_progress_at_a_03s_poll(api: ApiServer) -> None:
    # client.post('/api/process-data/1'): no body, as the guide's test sends it
    body = accepted(api.post("/api/process-data/1"))
    assert body["message"] == "Data processing started"
    seen = poll(api, f"/api/task-status/{body['task_id']}", {"SUCCESS", "FAILURE"}, "state")
    progress = [answer for answer in seen if answer["state"] == "PROGRESS"]
    assert progress, [answer["state"] for answer in seen]
    for answer in progress:
        # meta={'step': step, 'current': i + 1, 'total': len(steps), 'percent': ...}
        assert set(answer["progress"]) >= {"step", "current", "total", "percent"}
        assert answer["progress"]["step"] in {"validating", "transforming", "analyzing", "saving"}
        assert answer["progress"]["total"] == 4 and 1 <= answer["progress"]["current"] <= 4
        assert answer["date_done"] is None, answer  # only a finished task has one
    final = seen[-1]
    assert final["state"] == "SUCCESS", final
    # return {'status': 'completed', 'data_id': data_id, 'steps_completed': len(steps)}
    assert (final["result"]["status"], final["result"]["data_id"], final["result"]["steps_completed"]) == (
        "completed",
        1,
        4,
    )
    assert final["date_done"] is not None


def test_guide_001_generate_report_uses_parameters(api: ApiServer) -> None:
    # generate_report.delay(report_type=data['report_type'], parameters=data.get('parameters', {}))
    plain = accepted(api.post("/api/generate-report", {"report_type": "sales", "parameters": {}}))
    assert plain["message"] == "Report generation started" and plain["queue"] == "reports"
    shaped = accepted(
        api.post("/api/generate-report", {"report_type": "sales", "parameters": {"rows": 7, "region": "emea"}})
    )
    for body, rows in ((plain, 1000), (shaped, 7)):
        final = poll(api, f"/api/task-status/{body['task_id']}", {"SUCCESS", "FAILURE"}, "state")[-1]
        assert final["state"] == "SUCCESS", final
        result = final["result"]
        # return {'status': 'completed', 'report_type': report_type, 'file_path': filename}
        assert result["status"] == "completed" and result["report_type"] == "sales"
        assert Path(result["file_path"]).is_file() and result["rows"] == rows
        assert len(Path(result["file_path"]).read_text().splitlines()) == rows + 1
    assert final["result"]["parameters"]["region"] == "emea"


def test_guide_001_etl_routes(api: ApiServer) -> None:
    single = accepted(api.post("/api/etl/single/4"))
    assert single["message"] == "ETL pipeline started"
    parallel = accepted(api.post("/api/etl/parallel", {"source_ids": [1, 2, 3]}))
    assert parallel["message"] == "Parallel ETL started for 3 sources"
    one = poll(api, f"/api/task-status/{single['task_id']}", {"SUCCESS", "FAILURE"}, "state")[-1]
    assert one["state"] == "SUCCESS" and one["result"]["source_id"] == 4
    many = poll(api, f"/api/task-status/{parallel['task_id']}", {"SUCCESS", "FAILURE"}, "state")[-1]
    assert many["state"] == "SUCCESS" and many["result"]["sources"] == [1, 2, 3]


def test_guide_fields_stay_strict(api: ApiServer) -> None:
    # Unknown fields are still refused, and the alias never stands beside the guide's name.
    for path, payload in (
        ("/api/send-email", {"recipient": "a@example.com", "subject": "s", "body": "b", "cc": "x@example.com"}),
        ("/api/send-email", {"recipient": "a@example.com", "to": "a@example.com", "subject": "s", "body": "b"}),
        ("/api/send-email", {"subject": "s", "body": "b"}),
        ("/run-task", {"duration": 2, "task": "tasks.add"}),
        ("/run-task", {"duration": 100_000}),
        ("/api/generate-report", {"report_type": "sales", "parameters": {"rows": "7"}}),
    ):
        response = api.post(path, payload)
        assert response.status_code == 422, (path, payload, response.text)
        assert response.json()["error"] == "validation_error"


# -- every error is JSON, gunicorn's too ------------------------------------------------------


def test_long_ids_and_headers_get_json_errors(api: ApiServer) -> None:
    # The 5,000-character id: now Flask's answer, a 422 naming task_id.
    response = api.get("/api/task-status/" + "x" * 5000)
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "task_id"
    # Past gunicorn's longest request line: its own answer, in the Error shape.
    response = api.get("/task-status/" + "x" * 9000)
    assert response.status_code == 414 and response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "request_line_too_long" and response.json()["status"] == 414
    response = api.get("/api/task-status/abc", headers={"X-Trace": "y" * 20_000})
    assert response.status_code == 431 and response.json()["error"] == "headers_too_large"
    # A header gunicorn once refused (over its 8190-byte default) now reaches Flask.
    assert api.get("/api/task-status/abc", headers={"X-Trace": "y" * 10_000}).status_code == 200


# -- the guides' task names, called as the guides call them --------------------------------------


def test_guide_tasks_by_name(celery_app: FleetCelery, smtp: SMTPPeer, fleet_workers: object) -> None:
    send = celery_app.send_task
    # guide 002: app.conf.beat_schedule 'add-every-30-seconds': {'task': 'tasks.add', 'args': (16, 16)}
    assert send("tasks.add", (16, 16)).get(timeout=30) == 32
    # guide 001's routes call with keywords
    email = send("tasks.send_email", kwargs={"recipient": "kw@example.com", "subject": "S", "body": "B"})
    assert email.get(timeout=30)["recipient"] == "kw@example.com"
    bulk = send("tasks.send_bulk_emails", kwargs={"recipients": ["kw-bulk@example.com"], "subject": "S", "body": ""})
    assert bulk.get(timeout=30)["sent"] == 1
    report = send("tasks.generate_report", kwargs={"report_type": "usage", "parameters": {"rows": 3}})
    assert report.get(timeout=30)["rows"] == 3
    # guide 001's beat schedule: 'kwargs': {'report_type': 'daily_summary'}
    daily = send("tasks.generate_daily_report", kwargs={"report_type": "daily_summary"}).get(timeout=30)
    assert daily["status"] == "generated" and daily["report_type"] == "daily_summary" and daily["report_date"]
    assert send("tasks.my_complex_task").get(timeout=30)["status"] == "completed"
    smtp.wait_for("kw@example.com")


def test_reliable_tasks_take_the_guides_arguments(
    celery_app: FleetCelery, http_peer: HTTPPeer, fleet_workers: object
) -> None:
    # call_external_api(self, endpoint, payload): requests.post(endpoint, json=payload)
    endpoint = http_peer.script("/guide-api", [200], {"echo": True})
    outcome = celery_app.send_task("tasks.call_external_api", (endpoint, {"q": 1})).get(timeout=30)
    assert outcome["status_code"] == 200 and outcome["body"] == {"echo": True}
    [hit] = http_peer.hits_for("/guide-api")
    assert hit.method == "POST" and hit.body == {"q": 1}
    # send_webhook(self, url, event_data)
    url = http_peer.script("/guide-hook", [200])
    delivered = celery_app.send_task("tasks.send_webhook", kwargs={"url": url, "event_data": {"event": "x"}})
    assert delivered.get(timeout=30)["status"] == "delivered"
    assert http_peer.hits_for("/guide-hook")[0].body == {"event": "x"}


def test_guide_process_payment_and_a_failure_in_guide_words(
    api: ApiServer, celery_app: FleetCelery, http_peer: HTTPPeer, fleet_workers: object
) -> None:
    # process_payment(self, order_id, amount, payment_method), as guide 001 defines it
    http_peer.script("/payments", [200], {"id": "gw-1", "status": "succeeded"})
    paid = celery_app.send_task("tasks.process_payment", ("order-123", 99.99, "credit_card")).get(timeout=30)
    assert paid["status"] == "success" and paid["order_id"] == "order-123" and paid["amount"] == "99.99"
    assert paid["transaction_id"] == "gw-1"
    # A failed task: guide 001's /api/task-status answers `error` as text, str(task.info)
    failed = celery_app.send_task("tasks.process_payment", ("order-124", -1, "credit_card"))
    with pytest.raises(Exception, match="amount must be above 0"):
        failed.get(timeout=30)
    body = poll(api, f"/api/task-status/{failed.id}", {"FAILURE"}, "state")[-1]
    assert body["status"].startswith("failed")
    assert body["error"] == "amount must be above 0"
    assert body["exception"] == {"type": "PaymentValidationError", "message": "amount must be above 0"}


def test_guide_002_index(api: ApiServer) -> None:
    response = api.get("/")
    assert response.status_code == 200 and response.text == "Hello, World!"


def test_import_csv_chunks_with_progress_and_row_errors(
    celery_app: FleetCelery, settings: Any, fleet_workers: object
) -> None:
    path = settings.var_dir / "imports" / f"people-{uuid.uuid4().hex[:6]}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id,name,age"] + [f"{n},person-{n},{20 + n % 50}" for n in range(250)]
    lines[11] = "10,,30"  # empty required name: line 12 of the file
    lines[101] = "100,person-100"  # a column short: line 102
    lines[201] = "200,person-200,old"  # not a number: line 202
    path.write_text("\n".join(lines) + "\n")
    options = {"chunk_size": 50, "chunk_delay": 0.2, "required": ["name"], "numeric": ["age"]}
    result = celery_app.send_task("tasks.import_csv", (str(path.relative_to(settings.var_dir)), options))
    seen = []
    deadline = time.monotonic() + 60
    while not result.ready() and time.monotonic() < deadline:
        # One read per poll: `result.state` then `result.info` are two reads, and a task ending
        # between them gave a PROGRESS state with the final summary as its "progress".
        meta = celery_app.backend.get_task_meta(result.id)
        if meta["status"] == "PROGRESS":
            seen.append(meta["result"])
        time.sleep(0.05)
    summary = result.get(timeout=30)
    assert seen and all(set(meta) == {"processed", "total", "percent"} and meta["total"] == 250 for meta in seen)
    assert {meta["processed"] for meta in seen} <= {50, 100, 150, 200, 250}  # one update per chunk
    assert (summary["status"], summary["total_rows"], summary["processed"], summary["imported"]) == (
        "completed",
        250,
        250,
        247,
    )
    assert [error["row"] for error in summary["errors"]] == [12, 102, 202]
    assert len(Path(summary["output"]).read_text().splitlines()) == 247
    outside = celery_app.send_task("tasks.import_csv", ("/etc/passwd",))
    with pytest.raises(ValueError, match="FLEET_VAR_DIR"):
        outside.get(timeout=30)


def test_best_practice_tasks(celery_app: FleetCelery, fleet_workers: object) -> None:
    send = celery_app.send_task
    record = f"rec-{uuid.uuid4().hex[:8]}"
    assert send("tasks.idempotent_update", (record, 5)).get(timeout=30)["status"] == "updated"
    assert send("tasks.idempotent_update", (record, 5)).get(timeout=30)["status"] == "already_updated"
    assert send("tasks.idempotent_update", (record, 6)).get(timeout=30)["status"] == "updated"
    focused = send("tasks.focused_task", (7,)).get(timeout=30)
    assert focused["item_id"] == 7 and focused["status"] == "processed" and len(focused["fingerprint"]) == 64
    high = send("tasks.high_priority", ({"order": 1},))
    assert high.get(timeout=30)["status"] == "completed" and high.worker.startswith("high_priority@")
    low = send("tasks.low_priority", ({"order": 1},))
    assert low.get(timeout=30)["status"] == "completed" and low.worker.startswith("default@")
    done = send("tasks.time_limited", ({"steps": 2, "step_seconds": 0.1},)).get(timeout=30)
    assert done == {"status": "completed", "steps_done": 2, "steps": 2}
    # The soft limit, shortened for the test, stops it and the task reports what it finished.
    cut = send("tasks.time_limited", ({"steps": 20, "step_seconds": 0.5},), soft_time_limit=1.2, time_limit=10)
    partial = cut.get(timeout=30)
    assert partial["status"] == "partial" and partial["message"] == "Time limit reached"
    assert 0 < partial["steps_done"] < 20
    good = send("tasks.graceful_failure", ({"values": [1, 2, 3.5]},)).get(timeout=30)
    assert good == {"status": "success", "result": {"count": 3, "total": 6.5}}
    bad = send("tasks.graceful_failure", ("not data",)).get(timeout=30)
    assert bad["status"] == "failed" and bad["retry"] is False and "values" in bad["error"]


# -- cancel and date_done --------------------------------------------------------------------


def cancel(api: ApiServer, task_id: str, **body: Any) -> requests.Response:
    return api.post(f"/api/task-cancel/{task_id}", body or None)


def test_cancel_terminates_a_running_task(api: ApiServer, fleet_workers: dict[str, FleetProcess]) -> None:
    body = accepted(api.post("/run-task", {"duration": 60}))
    api.wait_for_state(body["task_id"], {"STARTED"}, timeout=30)
    response = cancel(api, body["task_id"], terminate=True)
    assert response.status_code == 202, response.text
    assert response.json()["was"] == "running" and response.json()["terminate"] is True
    final = api.wait_for_state(body["task_id"], {"REVOKED", "SUCCESS", "FAILURE"}, timeout=30)
    assert final["state"] == "REVOKED", final
    assert final["date_done"] is not None
    fleet_workers["default"].wait_for_log(f"Terminating {body['task_id']}", timeout=10)
    # A finished task is not cancelled again: it says so.
    again = cancel(api, body["task_id"])
    assert again.status_code == 200 and again.json()["was"] == "finished"


def test_cancel_a_queued_task_stores_revoked_once(
    api: ApiServer, fleet_workers: dict[str, FleetProcess], celery_app: FleetCelery
) -> None:
    """Every worker hears a revoke; only the API stores REVOKED, so no two workers race to insert it."""
    logs = {pool: len(worker.log()) for pool, worker in fleet_workers.items()}
    ids = [
        accepted(api.post("/api/tasks", {"task": "tasks.add", "args": [n, 2], "countdown": 4}))["task_id"]
        for n in range(3)
    ]
    for task_id in ids:
        status = api.get(f"/api/task-status/{task_id}").json()
        assert status["state"] == "PENDING" and status["known"] is True and status["date_done"] is None
        response = cancel(api, task_id)
        assert response.status_code == 202, response.text
        assert response.json()["was"] == "queued"
    # Every worker heard the revokes ...
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        revoked = celery_app.control.inspect(timeout=1).revoked() or {}
        if len(revoked) >= len(fleet_workers) and all(set(ids) <= set(held) for held in revoked.values()):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"not every worker revoked {ids}: {revoked}")
    # ... and the one holding each discarded it when its countdown came: it never ran.
    for task_id in ids:
        fleet_workers["default"].wait_for_log(f"Discarding revoked task: tasks.add[{task_id}]", timeout=30)
        assert api.get(f"/api/task-status/{task_id}").json()["state"] == "REVOKED"
    for pool, worker in fleet_workers.items():
        new = worker.log()[logs[pool] :]
        assert "IntegrityError" not in new and "UNIQUE constraint" not in new, f"{pool}:\n{new[-3000:]}"


def test_cancel_an_unknown_id_is_404_and_revokes_nothing(api: ApiServer, celery_app: FleetCelery) -> None:
    task_id = str(uuid.uuid4())
    response = cancel(api, task_id)
    assert response.status_code == 404 and response.json()["error"] == "unknown_task_id", response.text
    assert api.get(f"/api/task-status/{task_id}").json()["known"] is False
    revoked = celery_app.control.inspect(timeout=1).revoked() or {}
    assert revoked and not any(task_id in ids for ids in revoked.values())


def test_cancel_finds_a_task_sent_around_the_api_in_a_worker(api: ApiServer, celery_app: FleetCelery) -> None:
    """No accepted record, no result yet: the worker holding it on its countdown makes it known."""
    result = celery_app.send_task("tasks.add", (1, 1), countdown=5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        scheduled = celery_app.control.inspect(timeout=1).scheduled() or {}
        if any(entry["request"]["id"] == result.id for entries in scheduled.values() for entry in entries):
            break
    else:
        raise AssertionError(f"no worker reported {result.id} as scheduled: {scheduled}")
    response = cancel(api, result.id)
    assert response.status_code == 202 and response.json()["was"] == "queued", response.text
    assert api.wait_for_state(result.id, {"REVOKED", "SUCCESS"}, timeout=30)["state"] == "REVOKED"
