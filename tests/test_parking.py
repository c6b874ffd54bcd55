"""Far-future countdown tasks are parked in RabbitMQ and run once, on time."""

from __future__ import annotations

import time
from pathlib import Path

from fleet.testing.processes import start_worker
from fleet.worker.parking import park_for
from tests.support.apps import app_for


def test_park_for_never_parks_past_the_due_time() -> None:
    assert park_for(remaining=5, hold_limit=10) is None
    assert park_for(remaining=25, hold_limit=10) == 16
    assert park_for(remaining=70, hold_limit=30) == 64
    assert park_for(remaining=100_000, hold_limit=900) == 65536
    for remaining in range(11, 5000, 7):
        assert park_for(remaining, hold_limit=10) <= remaining


def test_countdown_beyond_the_hold_limit_is_parked_and_runs_once_when_due(
    private_env: dict[str, str], log_dir: Path
) -> None:
    env = {
        **private_env,
        "FLEET_BROKER_CONSUMER_TIMEOUT": "20",  # hold at most 10 s in the worker
        "FLEET_POOL_DEFAULT_SOFT_TIME_LIMIT": "10",
        "FLEET_POOL_DEFAULT_TIME_LIMIT": "15",
    }
    worker = start_worker("default", env, log_dir)
    try:
        with app_for(env) as app:
            sent = time.time()
            result = app.send_task("tasks.fetch_data", (11, 1), countdown=22)
            outcome = result.get(timeout=60)
            finished = time.time()
    finally:
        worker.stop()
    assert outcome["source_id"] == 11
    assert finished - sent >= 22, "it did not run before its countdown"
    log = worker.log()
    assert f"parked task {result.id} for 16s" in log
    assert log.count(f"task succeeded: name=tasks.fetch_data id={result.id}") == 1
