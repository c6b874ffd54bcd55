"""The worker runs a task id at most once, and still runs Celery's retries and DLQ replays (fleet.worker.dedup)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fleet.celery_app import FleetCelery
from fleet.publish import publish_many
from fleet.testing.broker import queue_depth
from fleet.testing.processes import FLEET, FleetProcess, start_worker
from tests.support.apps import app_for
from tests.support.ledger import Ledger
from tests.test_results import redis_url  # noqa: F401 - fixture


def _wait_skipped(worker: FleetProcess, count: int, timeout: float = 30) -> None:
    """Until the worker has logged ``count`` deliveries it did not run."""
    deadline = time.monotonic() + timeout
    while worker.log().count("not run again") < count:
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_same_task_id_published_twice_runs_once(
    backend: str, private_env: dict[str, str], ledger: Ledger, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    """On Redis the stored state is read by the script that stores STARTED (claim_started)."""
    env = dict(private_env)
    if backend == "redis":
        env["CELERY_RESULT_BACKEND"] = request.getfixturevalue("redis_url")
    together, apart = str(uuid.uuid4()), str(uuid.uuid4())
    call = ("tests.record", (ledger.key, 0.2), {})
    with app_for(env) as app:
        # Two copies queued side by side (as a retried 503 leaves them), and one copy of another id.
        publish_many(app, [(*call, {"task_id": together}), (*call, {"task_id": together}), (*call, {"task_id": apart})])
        worker = start_worker("default", env, log_dir)
        try:
            assert not ledger.wait_for([together, apart], timeout=60).lost
            _wait_skipped(worker, 1)
            # A copy arriving after the first run succeeded.
            publish_many(app, [(*call, {"task_id": apart})])
            _wait_skipped(worker, 2)
            assert queue_depth(app.conf.broker_url, "default")[0] == 0
        finally:
            worker.stop()
    assert ledger.completions() == {together: 1, apart: 1}
    log = worker.log()
    assert f"[{apart}] not run again: it already succeeded" in log
    assert log.count("not run again") == 2, log[-3000:]


def test_celery_retries_and_dlq_replays_of_the_same_id_still_run(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    url = private_app.conf.broker_url
    retried, failed = publish_many(
        private_app, [("tests.retry_once", (ledger.key,), {}), ("tests.fail_once", (ledger.key,), {})]
    )
    worker = start_worker("default", private_env, log_dir)
    try:
        assert not ledger.wait_for([retried], timeout=60).lost, worker.log()[-3000:]
        deadline = time.monotonic() + 30
        while queue_depth(url, "default.dlq")[0] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert private_app.AsyncResult(failed).state == "FAILURE"
        replay = subprocess.run(
            [FLEET, "dlq", "replay", "default", "--id", failed],
            env=private_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replay.returncode == 0 and "replayed 1 message" in replay.stdout, replay.stderr
        assert not ledger.wait_for([retried, failed], timeout=60).lost, worker.log()[-3000:]
    finally:
        worker.stop()
    assert ledger.completions() == {retried: 1, failed: 1}
    assert "not run again" not in worker.log()


def test_copies_of_one_id_in_two_threaded_workers_on_redis_run_once(
    private_env: dict[str, str],
    ledger: Ledger,
    log_dir: Path,
    redis_url: str,  # noqa: F811 - fixture
) -> None:
    """The cross-process race the read-then-write check leaves open: each id twice in a row, and
    RabbitMQ hands consecutive deliveries to alternate consumers, so the two copies reach two worker
    processes at the same moment. On Redis the read and the STARTED write are one script: one runs."""
    env = {**private_env, "CELERY_RESULT_BACKEND": redis_url}
    ids = [str(uuid.uuid4()) for _ in range(60)]
    call = ("tests.record", (ledger.key, 0.05), {})
    workers = [start_worker("default", env, log_dir, index=index) for index in (0, 1)]
    try:
        with app_for(env) as app:
            publish_many(app, [(*call, {"task_id": task_id}) for task_id in ids for _ in (0, 1)])
            assert not ledger.wait_for(ids, timeout=60).lost
            deadline = time.monotonic() + 30  # until every delivery ran or was skipped
            while time.monotonic() < deadline and (
                queue_depth(app.conf.broker_url, "default")[0]
                or sum(ledger.completions().values()) + sum(w.log().count("not run again") for w in workers)
                < 2 * len(ids)
            ):
                time.sleep(0.1)
    finally:
        for worker in workers:
            worker.stop()
    assert ledger.completions() == dict.fromkeys(ids, 1)
    assert sum(worker.log().count("not run again") for worker in workers) == len(ids)
