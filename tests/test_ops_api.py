"""The operator API against a live fleet: a real RabbitMQ vhost, real workers, ``fleet api`` under gunicorn.

Dead letters are listed with their exception, replayed (and then complete) or deleted; a paused
queue runs nothing, stays paused across a worker restart, and runs everything once resumed;
tokens are scoped (401 without one, 403 with the wrong scope).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

from fleet.celery_app import FleetCelery
from fleet.pools import metrics_port
from fleet.testing.broker import queue_depth
from fleet.testing.processes import FLEET, FleetProcess, start_worker
from tests.conftest import ENQUEUE, OPERATE, READ
from tests.support.api import ApiServer
from tests.support.peers import HTTPPeer
from tests.support.results import succeeded

T = TypeVar("T")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_until(condition: Callable[[], T], what: str, timeout: float = 60) -> T:
    """The condition's first truthy value, asked every 0.2 s for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def test_dead_letters_listed_with_their_exception_replayed_and_deleted(
    ops_api: ApiServer, default_worker: list[FleetProcess], private_app: FleetCelery, http_peer: HTTPPeer
) -> None:
    url = private_app.conf.broker_url
    peer = http_peer.script(f"/ops-{uuid.uuid4().hex}", [500] * 6 + [200])  # dies after 5 retries, then succeeds
    flaky = private_app.send_task("tasks.call_external_api", (peer,))
    broken = private_app.send_task("tasks.validate_data", ({"source_id": 1},))  # KeyError: 'records', for good
    wait_until(lambda: queue_depth(url, "default.dlq")[0] == 2, "both dead-lettered")

    page = requests.get(ops_api.url("/api/ops/dead-letters/default"), headers=auth(READ), timeout=30)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 2
    items = {item["task_id"]: item for item in body["items"]}
    assert set(items) == {flaky.id, broken.id}
    assert items[broken.id]["exception"] == {"type": "KeyError", "message": "'records'"}
    assert (
        items[flaky.id]["exception"]["type"] == "TransientHTTPError"
        and "HTTP 500" in items[flaky.id]["exception"]["message"]
    )
    assert items[flaky.id]["retries"] == 5 and items[flaky.id]["reason"] == "rejected" and items[flaky.id]["count"] == 1
    assert "KeyError" in items[broken.id]["traceback"] and items[broken.id]["last_death"] != "?"
    assert queue_depth(url, "default.dlq")[0] == 2, "browsing removes nothing"
    second = requests.get(ops_api.url("/api/ops/dead-letters/default?limit=1&offset=1"), headers=auth(READ), timeout=30)
    assert [item["task_id"] for item in second.json()["items"]] == [body["items"][1]["task_id"]], "same order again"

    # scopes: a read token cannot act, an enqueue token cannot read, no token is nobody
    replay_url = ops_api.url("/api/ops/dead-letters/default/replay")
    denied = requests.post(replay_url, json={"task_ids": [flaky.id]}, headers=auth(READ), timeout=30)
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden", denied.text
    assert requests.get(ops_api.url("/api/ops/queues"), headers=auth(ENQUEUE), timeout=30).status_code == 403
    assert requests.post(replay_url, json={"all": True}, timeout=30).status_code == 401
    assert requests.post(replay_url, json={"all": True}, headers=auth("nope"), timeout=30).status_code == 401
    assert queue_depth(url, "default.dlq")[0] == 2, "refused requests changed nothing"

    replayed = requests.post(replay_url, json={"task_ids": [flaky.id]}, headers=auth(OPERATE), timeout=30)
    assert replayed.status_code == 200 and replayed.json() == {"queue": "default", "replayed": 1}, replayed.text
    assert succeeded(private_app, flaky.id)["status_code"] == 200, "the replayed task completes"
    assert "replay by token 'ops'" in ops_api.process.log(), "the action is logged with the token's name"

    gone = requests.delete(ops_api.url(f"/api/ops/dead-letters/default/{broken.id}"), headers=auth(OPERATE), timeout=30)
    assert gone.status_code == 200 and gone.json()["deleted"] == 1, gone.text
    assert queue_depth(url, "default.dlq")[0] == 0
    again = requests.delete(
        ops_api.url(f"/api/ops/dead-letters/default/{broken.id}"), headers=auth(OPERATE), timeout=30
    )
    assert again.status_code == 404

    wrong = requests.delete(
        ops_api.url("/api/ops/dead-letters/default"),
        json={"all": True, "confirm": "email"},
        headers=auth(OPERATE),
        timeout=30,
    )
    assert wrong.status_code == 422, wrong.text
    assert requests.get(ops_api.url("/api/ops/dead-letters/nope"), headers=auth(READ), timeout=30).status_code == 404


def test_a_paused_queue_runs_nothing_even_after_a_restart_and_everything_once_resumed(
    ops_api: ApiServer,
    default_worker: list[FleetProcess],
    private_app: FleetCelery,
    ops_env: dict[str, str],
    log_dir: Path,
) -> None:
    url = private_app.conf.broker_url

    def queue_row() -> dict:
        rows = requests.get(ops_api.url("/api/ops/queues"), headers=auth(READ), timeout=30).json()["queues"]
        return next(row for row in rows if row["name"] == "default")

    assert [
        row["name"]
        for row in requests.get(ops_api.url("/api/ops/queues"), headers=auth(READ), timeout=30).json()["queues"]
    ] == ["high_priority", "email", "reports", "default"]
    paused = requests.post(ops_api.url("/api/ops/queues/default/pause"), headers=auth(OPERATE), timeout=30)
    assert paused.status_code == 200 and paused.json()["paused_by"] == "ops", paused.text
    wait_until(lambda: queue_depth(url, "default")[1] == 0, "the worker stopped consuming default at once", timeout=15)
    assert queue_row()["paused"] is True

    metrics = f"http://127.0.0.1:{metrics_port(int(ops_env['FLEET_METRICS_PORT']), 'default')}/metrics"
    assert 'fleet_queue_paused{queue="default"} 1.0' in requests.get(metrics, timeout=30).text
    assert 'fleet_queue_paused{queue="email"} 0.0' in requests.get(metrics, timeout=30).text

    results = [private_app.send_task("tasks.add", (n, n)) for n in range(5)]
    time.sleep(3)
    assert queue_depth(url, "default")[0] == 5, "nothing runs while paused"

    default_worker[0].stop()
    default_worker[0] = start_worker("default", ops_env, log_dir)
    time.sleep(7)  # past a heartbeat
    assert queue_depth(url, "default") == (5, 0), "a restarted worker stays paused"
    assert all(result.state == "PENDING" for result in results)

    resumed = requests.post(ops_api.url("/api/ops/queues/default/resume"), headers=auth(OPERATE), timeout=30)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert [result.get(timeout=30) for result in results] == [2 * n for n in range(5)], "everything runs once resumed"
    assert queue_row()["paused"] is False and queue_row()["consumers"] == 1
    assert 'fleet_queue_paused{queue="default"} 0.0' in requests.get(metrics, timeout=30).text


def test_cli_pauses_and_resumes_like_the_api(ops_env: dict[str, str]) -> None:
    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEET, "queue", *args], env=ops_env, capture_output=True, text=True, timeout=60)

    assert fleet("pause", "email").returncode == 0
    listed = fleet("list").stdout
    assert "email: paused by cli:" in listed and "default: consuming" in listed, listed
    assert fleet("resume", "email").stdout.strip() == "resumed email"
    assert "email: consuming" in fleet("list").stdout
    assert fleet("pause", "nope").returncode != 0


def test_scheduled_workers_and_tasks(
    ops_api: ApiServer, default_worker: list[FleetProcess], private_app: FleetCelery
) -> None:
    done = private_app.send_task("tasks.add", (1, 2))
    assert done.get(timeout=30) == 3
    later = private_app.send_task("tasks.add", (2, 2), countdown=600)
    wait_until(
        lambda: any(
            item["task_id"] == later.id
            for item in requests.get(ops_api.url("/api/ops/scheduled"), headers=auth(READ), timeout=30).json()["items"]
        ),
        "the countdown task is listed",
    )
    cancelled = requests.post(ops_api.url(f"/api/ops/scheduled/{later.id}/cancel"), headers=auth(OPERATE), timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    assert later.state == "REVOKED"

    def answered() -> list[dict] | None:
        """The default pool's workers once its one worker answered; a reply slower than
        FLEET_API_INSPECT_TIMEOUT (1 s, a loaded test host) is listed unanswered, so ask again."""
        pools = requests.get(ops_api.url("/api/ops/workers"), headers=auth(READ), timeout=30).json()["pools"]
        workers = next(pool for pool in pools if pool["name"] == "default")["workers"]
        return workers if [worker["answered"] for worker in workers] == [True] else None

    (worker,) = wait_until(answered, "the default worker answers")
    assert worker["heartbeat_age"] is not None and worker["concurrency"] >= 1

    recent = requests.get(ops_api.url("/api/ops/tasks?state=SUCCESS&queue=default"), headers=auth(READ), timeout=30)
    assert recent.status_code == 200, recent.text
    row = next(item for item in recent.json()["items"] if item["task_id"] == done.id)
    assert row["task"] == "tasks.add" and row["worker"].startswith("default") and row["finished"]
    bad = requests.get(ops_api.url("/api/ops/tasks?limit=0"), headers=auth(READ), timeout=30)
    assert bad.status_code == 422
