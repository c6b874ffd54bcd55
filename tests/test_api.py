"""The enqueue API over real HTTP: a live gunicorn (`fleet api`) and real workers on RabbitMQ."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fleet.settings import Settings
from fleet.testing.processes import FLEET
from tests.support.api import ApiServer, assert_error
from tests.support.peers import SMTPPeer

TOKEN = "test-token-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def api(fleet_env: dict[str, str], log_dir: Path, fleet_workers: object) -> Iterator[ApiServer]:
    server = ApiServer(fleet_env, log_dir, token=TOKEN).start()
    yield server
    server.stop()


def accepted(response: requests.Response) -> dict:
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["Location"] == body["status_url"] == f"/api/task-status/{body['task_id']}"
    return body


# -- tasks run end to end ----------------------------------------------------------


def test_send_email_is_accepted_and_reaches_success(api: ApiServer, smtp: SMTPPeer) -> None:
    to = f"api-{uuid.uuid4().hex[:8]}@example.test"
    body = accepted(api.post("/api/send-email", {"to": to, "subject": "hi", "body": "from the API"}))
    assert body["queue"] == "email" and body["task"] == "tasks.send_email"
    status = api.wait_for_state(body["task_id"], {"SUCCESS", "FAILURE"})
    assert status["state"] == "SUCCESS", status
    assert status["result"]["to"] == to and status["result"]["status"] == "success"
    assert status["queue"] == "email" and status["worker"].startswith("email@") and status["known"]
    assert smtp.wait_for(to)[0]["Subject"] == "hi"


def test_process_data_reports_progress_then_success(api: ApiServer) -> None:
    body = accepted(api.post("/api/process-data/42", {"rows": 500, "step_delay": 0.4}))
    seen: list[str] = []
    status = api.wait_for_state(body["task_id"], {"SUCCESS", "FAILURE"}, seen=seen)
    assert status["state"] == "SUCCESS", status
    assert "PROGRESS" in seen, seen
    assert seen.index("PROGRESS") < seen.index("SUCCESS")
    assert status["result"]["data_id"] == 42 and status["result"]["count"] > 0


def test_progress_carries_the_step(api: ApiServer) -> None:
    body = accepted(api.post("/api/process-data/7", {"rows": 50, "step_delay": 0.5}))
    status = api.wait_for_state(body["task_id"], {"PROGRESS"})
    assert set(status["progress"]) >= {"current", "total", "percent", "step"}
    assert status["progress"]["total"] == 4
    api.wait_for_state(body["task_id"], {"SUCCESS"})


def test_etl_single_and_parallel_return_their_results(api: ApiServer) -> None:
    single = accepted(api.post("/api/etl/single/5", {"records": 20}))
    parallel = accepted(api.post("/api/etl/parallel", {"source_ids": [1, 2, 3], "records": 10}))
    one = api.wait_for_state(single["task_id"], {"SUCCESS", "FAILURE"})
    assert one["state"] == "SUCCESS", one
    assert one["result"]["source_id"] == 5 and one["result"]["records"] + one["result"]["invalid"] == 20
    many = api.wait_for_state(parallel["task_id"], {"SUCCESS", "FAILURE"}, timeout=90)
    assert many["state"] == "SUCCESS", many
    assert many["result"]["sources"] == [1, 2, 3]
    assert many["result"]["records"] + many["result"]["invalid"] == 30


def test_generate_report_and_bulk_emails(api: ApiServer, smtp: SMTPPeer) -> None:
    report = accepted(api.post("/api/generate-report", {"report_type": "sales", "rows": 25}))
    assert report["queue"] == "reports"
    recipients = [f"bulk-{n}-{uuid.uuid4().hex[:6]}@example.test" for n in range(3)]
    bulk = accepted(api.post("/api/send-bulk-emails", {"recipients": recipients, "subject": "s", "body": "b"}))
    result = api.wait_for_state(report["task_id"], {"SUCCESS", "FAILURE"})["result"]
    assert result["rows"] == 25 and Path(result["path"]).exists()
    assert api.wait_for_state(bulk["task_id"], {"SUCCESS"})["result"]["total"] == 3
    for to in recipients:
        smtp.wait_for(to)


def test_cancelled_countdown_task_ends_revoked_and_never_runs(api: ApiServer, smtp: SMTPPeer) -> None:
    to = f"never-{uuid.uuid4().hex[:8]}@example.test"
    body = accepted(
        api.post("/api/tasks", {"task": "tasks.send_email", "args": [to, "no", "never sent"], "countdown": 3})
    )
    cancel = api.post(f"/api/task-cancel/{body['task_id']}")
    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["task_id"] == body["task_id"]
    status = api.wait_for_state(body["task_id"], {"REVOKED", "SUCCESS", "FAILURE"}, timeout=30)
    assert status["state"] == "REVOKED", status
    time.sleep(1)  # past the countdown: it still never ran
    assert smtp.messages_to(to) == []


def test_generic_enqueue_honours_routing_and_overrides(api: ApiServer) -> None:
    routed = accepted(api.post("/run-task", {"task": "tasks.fetch_data", "args": [9, 3]}))
    assert routed["queue"] == "default"
    override = accepted(api.post("/api/tasks", {"task": "tasks.fetch_data", "args": [9, 3], "queue": "reports"}))
    assert override["queue"] == "reports"
    for task_id in (routed["task_id"], override["task_id"]):
        status = api.wait_for_state(task_id, {"SUCCESS", "FAILURE"})
        assert status["state"] == "SUCCESS" and len(status["result"]["records"]) == 3
    assert api.get(f"/task-status/{override['task_id']}").json()["worker"].startswith("reports@")


def test_batch_is_accepted_after_every_confirm_and_every_task_runs(api: ApiServer) -> None:
    tasks = [{"task": "tasks.fetch_data", "args": [n, 2]} for n in range(50)]
    response = api.post("/api/tasks/batch", {"tasks": tasks})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["count"] == 50 and len({task["task_id"] for task in body["tasks"]}) == 50
    assert all(task["status_url"] == f"/api/task-status/{task['task_id']}" for task in body["tasks"])
    for task in body["tasks"]:
        assert api.wait_for_state(task["task_id"], {"SUCCESS", "FAILURE"})["state"] == "SUCCESS"


def test_every_202_is_a_task_that_ran(api: ApiServer) -> None:
    """Concurrent clients; every id answered 202 must end SUCCESS: none accepted and lost."""

    def post(n: int) -> requests.Response:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            return session.post(api.url("/api/tasks"), json={"task": "tasks.fetch_data", "args": [n, 1]}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(80)))
    ids = [accepted(response)["task_id"] for response in responses]
    assert len(set(ids)) == 80
    done = [api.wait_for_state(task_id, {"SUCCESS", "FAILURE"})["state"] for task_id in ids]
    assert done.count("SUCCESS") == 80


def test_unknown_task_id_is_pending_and_says_so(api: ApiServer) -> None:
    status = api.get(f"/api/task-status/{uuid.uuid4()}").json()
    assert status["state"] == "PENDING" and status["known"] is False and "unknown" in status["status"]


# -- idempotency ---------------------------------------------------------------------


def test_same_idempotency_key_twice_yields_one_task(api: ApiServer, smtp: SMTPPeer) -> None:
    to = f"once-{uuid.uuid4().hex[:8]}@example.test"
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    payload = {"to": to, "subject": "once", "body": "exactly one"}
    first = api.post("/api/send-email", payload, headers=key)
    second = api.post("/api/send-email", payload, headers=key)
    assert accepted(first)["task_id"] == accepted(second)["task_id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert api.wait_for_state(first.json()["task_id"], {"SUCCESS"})["state"] == "SUCCESS"
    time.sleep(1)
    assert len(smtp.messages_to(to)) == 1
    other = api.post("/api/send-email", {**payload, "subject": "different"}, headers=key)
    assert_error(other, 422, "idempotency_key_reused", "Idempotency-Key")


def test_concurrent_retries_with_one_key_enqueue_once(api: ApiServer, smtp: SMTPPeer) -> None:
    to = f"race-{uuid.uuid4().hex[:8]}@example.test"
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": f"race-{uuid.uuid4()}"}
    payload = {"to": to, "subject": "race", "body": "one of many retries"}

    def post(_: int) -> requests.Response:
        return requests.post(api.url("/api/send-email"), json=payload, headers=headers, timeout=30)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(post, range(6)))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {202, 409} and 202 in statuses, statuses
    ids = {response.json()["task_id"] for response in responses if response.status_code == 202}
    assert len(ids) == 1
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "idempotency_in_progress")
    api.wait_for_state(ids.pop(), {"SUCCESS"})
    time.sleep(1)
    assert len(smtp.messages_to(to)) == 1


# -- errors that need the live server (the rest: test_api_validation.py) ------------


def test_open_paths_answer_without_a_token(api: ApiServer) -> None:
    """Probes, metrics and the monitoring health answer anyone (the 401s are in test_api_validation.py)."""
    for open_path in ("/healthz", "/readyz", "/metrics", "/api/monitoring/health"):
        assert requests.get(api.url(open_path), timeout=10).status_code == 200, open_path


# -- monitoring, probes, metrics -----------------------------------------------------


def test_monitoring_reports_workers_queues_and_health(api: ApiServer, settings: Settings) -> None:
    workers = api.get("/api/monitoring/workers").json()
    pools = {worker["name"].split("@")[0] for worker in workers["workers"]}
    assert {"high_priority", "email", "reports", "default"} <= pools, workers
    assert all(worker["concurrency"] and worker["concurrency"] > 0 for worker in workers["workers"])
    queues = api.get("/api/monitoring/queues").json()["queues"]
    assert [queue["name"] for queue in queues] == ["high_priority", "email", "reports", "default"]
    assert all(queue["consumers"] >= 1 and queue["dead_letter_queue"] == f"{queue['name']}.dlq" for queue in queues)
    health = api.get("/api/monitoring/health")
    assert health.status_code == 200 and health.json()["workers"] >= 4
    assert api.get("/readyz").json() == {"status": "ready", "broker": True}


def test_metrics_count_requests_by_route_template_and_published_tasks(api: ApiServer) -> None:
    accepted(api.post("/api/process-data/12345", {"rows": 10}))
    text = requests.get(api.url("/metrics"), timeout=10).text
    assert 'route="/api/process-data/<int(max=2147483647):data_id>"' in text
    assert "12345" not in text  # never the raw path
    assert 'fleet_api_tasks_published_total{queue="default",task="tasks.process_data"}' in text
    assert 'fleet_api_tasks_published_total{queue="high_priority",task="other"} 0.0' in text
    assert "fleet_api_publish_duration_seconds_bucket" in text
    assert published(text, "default", "tasks.process_data") >= 1
    # A batch counts each task under its own queue.
    before = {queue: published(text, queue, "tasks.fetch_data") for queue in ("default", "reports")}
    tasks = [{"task": "tasks.fetch_data", "args": [n, 1]} for n in range(3)]
    tasks += [{"task": "tasks.fetch_data", "args": [n, 1], "queue": "reports"} for n in range(2)]
    assert api.post("/api/tasks/batch", {"tasks": tasks}).status_code == 202
    text = requests.get(api.url("/metrics"), timeout=10).text
    assert published(text, "default", "tasks.fetch_data") == before["default"] + 3
    assert published(text, "reports", "tasks.fetch_data") == before["reports"] + 2


def published(metrics: str, queue: str, task: str) -> float:
    """``fleet_api_tasks_published_total`` for one queue and task, summed over the API's processes."""
    series = f'fleet_api_tasks_published_total{{queue="{queue}",task="{task}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(series + " "))


def test_production_refuses_to_serve_without_a_token(fleet_env: dict[str, str]) -> None:
    env = {**fleet_env, "FLEET_ENV": "production", "FLEET_API_TOKEN": ""}
    done = subprocess.run([FLEET, "api"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "FLEET_API_TOKEN must be set" in done.stderr
