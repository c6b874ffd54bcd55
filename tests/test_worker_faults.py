"""Faults inside workers: killed children, poison tasks, revokes across restarts, time limits.
Each on a private vhost of the shared broker, with the loss ledger counting outcomes.

The child-level faults run the `default` pool as prefork (``--pool-kind prefork``): they are
what prefork's main process sees of its children. The same faults in a threaded worker, whose
process dies whole, are in tests/test_threaded_worker.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from celery.exceptions import TimeLimitExceeded

from fleet.celery_app import FleetCelery
from fleet.testing.broker import drain
from fleet.testing.processes import start_worker
from tests.support.ledger import REDIS_URL, Ledger

PREFORK = ("--pool-kind", "prefork")


def test_child_killed_mid_task_is_retried_and_completes(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    worker = start_worker("default", private_env, log_dir, *PREFORK)
    try:
        accepted = [private_app.send_task("tests.die_once", (ledger.key,)).id for _ in range(3)]
        tally = ledger.wait_for(accepted, timeout=60)
    finally:
        worker.stop()
    assert not tally.lost and not tally.duplicated and not tally.unexpected, tally
    assert redis.Redis.from_url(REDIS_URL).exists(*(f"{ledger.key}:died:{task_id}" for task_id in accepted)) == 3


def test_poison_task_is_dead_lettered_after_bounded_runs_while_others_flow(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    worker = start_worker("default", private_env, log_dir, *PREFORK)
    try:
        poison = private_app.send_task("tests.poison", (ledger.key,))
        accepted = [private_app.send_task("tests.record", (ledger.key, 0.05)).id for _ in range(40)]
        tally = ledger.wait_for(accepted, timeout=60)
        dead: list = []
        deadline = time.monotonic() + 30
        while not dead and time.monotonic() < deadline:
            dead = [m for m in drain(private_app.conf.broker_url, "default.dlq") if m.headers["id"] == poison.id]
            time.sleep(0.2)
    finally:
        worker.stop()
    assert not tally.lost and not tally.duplicated, tally
    assert dead, "the poison task ends in default.dlq"
    runs = int(redis.Redis.from_url(REDIS_URL).get(f"{ledger.key}:poison-runs"))
    assert runs == 3, "max_retries=2: one run and two retries, then dead-lettered"
    assert poison.state == "FAILURE"


def test_revoked_countdown_task_stays_revoked_across_a_restart(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    worker = start_worker("default", private_env, log_dir)
    revoked = private_app.send_task("tests.record", (ledger.key,), countdown=12)
    kept = private_app.send_task("tests.record", (ledger.key,), countdown=12)
    time.sleep(1)
    private_app.control.revoke(revoked.id)
    time.sleep(1)
    worker.stop()
    worker = start_worker("default", private_env, log_dir)
    try:
        tally = ledger.wait_for([kept.id], timeout=60)
        time.sleep(2)
    finally:
        worker.stop()
    assert not tally.lost, tally
    assert revoked.id not in ledger.completions()
    assert revoked.state == "REVOKED"


def test_time_limits_fire_and_the_child_is_replaced(
    private_env: dict[str, str], private_app: FleetCelery, log_dir: Path
) -> None:
    worker = start_worker("default", private_env, log_dir, *PREFORK, "--concurrency", "1")
    node = next(iter(private_app.control.inspect(timeout=5).ping()))
    inspect = private_app.control.inspect([node], timeout=5)
    try:
        before = inspect.stats()[node]["pool"]["processes"]
        soft = private_app.send_task("tests.sleep", (10,), soft_time_limit=1, time_limit=30)
        with pytest.raises(Exception, match="SoftTimeLimitExceeded"):
            soft.get(timeout=30)
        hard = private_app.send_task("tests.stubborn", (10,), soft_time_limit=1, time_limit=2)
        with pytest.raises(TimeLimitExceeded):
            hard.get(timeout=30)
        assert private_app.send_task("tests.sleep", (0,)).get(timeout=30) == 0
        after = inspect.stats()[node]["pool"]["processes"]
        dead = [m.headers["id"] for m in drain(private_app.conf.broker_url, "default.dlq")]
    finally:
        worker.stop()
    assert len(after) == 1 and after != before, "the hard limit killed the child and a new one replaced it"
    assert worker.log().count(f"Hard time limit (2s) exceeded for tests.stubborn[{hard.id}]") == 1, "never requeued"
    assert sorted(dead) == sorted([soft.id, hard.id]), "both timed-out tasks are dead-lettered"
