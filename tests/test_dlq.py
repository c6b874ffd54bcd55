"""`fleet dlq`: list dead letters with their reason, replay them to their queue, purge on confirmation."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from fleet.celery_app import FleetCelery
from tests.support.broker import queue_depth
from tests.support.processes import FLEET, start_worker


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
