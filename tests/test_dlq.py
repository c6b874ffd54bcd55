"""`fleet dlq`: list dead letters with their reason, replay them to their queue, purge on confirmation."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from fleet.celery_app import FleetCelery
from fleet.testing.broker import queue_depth
from fleet.testing.processes import FLEET, start_worker
from tests.support.peers import HTTPPeer
from tests.support.results import succeeded


def _fleet(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEET, "dlq", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_list_replay_and_purge(private_env: dict[str, str], private_app: FleetCelery, log_dir: Path) -> None:
    url = private_app.conf.broker_url
    # Two tasks that fail for good (records missing): dead-lettered with reason "rejected".
    worker = start_worker("default", private_env, log_dir)
    try:
        failed = [private_app.send_task("tasks.validate_data", ({"source_id": n},)) for n in (1, 2)]
        deadline = time.monotonic() + 30
        while queue_depth(url, "default.dlq")[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.stop()

    listed = _fleet(private_env, "list", "default", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert sorted(letter["task_id"] for letter in letters) == sorted(r.id for r in failed)
    assert {letter["reason"] for letter in letters} == {"rejected"}
    assert {letter["task"] for letter in letters} == {"tasks.validate_data"}
    assert queue_depth(url, "default.dlq")[0] == 2, "listing removes nothing"

    replayed = _fleet(private_env, "replay", "default", "--id", failed[0].id)
    assert replayed.returncode == 0 and "replayed 1 message" in replayed.stdout
    assert queue_depth(url, "default")[0] == 1 and queue_depth(url, "default.dlq")[0] == 1

    refused = _fleet(private_env, "purge", "default", stdin="n\n")
    assert refused.returncode != 0 and queue_depth(url, "default.dlq")[0] == 1, "purge asks first"
    purged = _fleet(private_env, "purge", "default", "--yes")
    assert purged.returncode == 0 and "purged 1 message" in purged.stdout
    assert queue_depth(url, "default.dlq")[0] == 0


def test_list_shows_the_exception_and_replay_gives_a_fresh_retry_budget(
    private_env: dict[str, str], private_app: FleetCelery, log_dir: Path, http_peer: HTTPPeer
) -> None:
    """A task that used all 5 retries dies; replayed, it may fail and retry again, then succeed."""
    url = private_app.conf.broker_url
    attempts = 1 + 5  # the first run and its 5 retries
    peer = http_peer.script("/dlq-budget", [500] * (attempts + 1) + [200])  # the replay fails once more, then not
    env = {**private_env, "FLEET_RETRY_BACKOFF_BASE": "0.05"}
    worker = start_worker("default", env, log_dir)
    try:
        result = private_app.send_task("tasks.call_external_api", (peer,))
        _wait_until(lambda: queue_depth(url, "default.dlq")[0] == 1, "dead-lettered after its retries")
        assert len(http_peer.hits_for("/dlq-budget")) == attempts

        listed = _fleet(private_env, "list", "default")
        assert listed.returncode == 0, listed.stderr
        assert f"tasks.call_external_api  {result.id}  rejected x1  retries 5" in listed.stdout, listed.stdout
        assert f"TransientHTTPError: GET {peer}: HTTP 500" in listed.stdout
        (letter,) = json.loads(_fleet(private_env, "list", "default", "--json").stdout)
        assert letter["error"].startswith("TransientHTTPError:") and "HTTP 500" in letter["error"]
        assert "TransientHTTPError" in letter["traceback"] and "line" in letter["traceback"]

        replayed = _fleet(private_env, "replay", "default")
        assert replayed.returncode == 0 and "replayed 1 message" in replayed.stdout
        assert "retry count reset" in replayed.stdout
        assert succeeded(private_app, result.id)["status_code"] == 200, "retried after the replay, not dead again"
        assert len(http_peer.hits_for("/dlq-budget")) == attempts + 2
        assert queue_depth(url, "default.dlq")[0] == 0
    finally:
        worker.stop()


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
