"""A threaded worker (the `default` pool's model: processes x threads, fleet.worker.limits) keeps
what prefork gives: time limits, crash recovery counted against max_retries, memory recycling,
and nothing lost when a process dies. Real RabbitMQ, real worker processes, private vhosts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from fleet.celery_app import FleetCelery
from fleet.ops.pause import open_pauses
from fleet.publish import publish_many
from fleet.testing.broker import drain
from fleet.testing.processes import FleetProcess, start_worker
from fleet.worker.limits import EXIT_HARD_LIMIT, EXIT_RECYCLE
from tests.support.ledger import REDIS_URL, Ledger

THREADS = ("--pool-kind", "threads", "--concurrency", "4")


def dead_letters(app: FleetCelery, wanted: set[str], timeout: float = 30) -> set[str]:
    """The ids among ``wanted`` that reached default.dlq within ``timeout``."""
    found: set[str] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= found and time.monotonic() < deadline:
        found |= {m.headers["id"] for m in drain(app.conf.broker_url, "default.dlq")} & wanted
        time.sleep(0.2)
    return found


def exit_code(worker: FleetProcess, timeout: float) -> int | None:
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout)
    except Exception:  # noqa: BLE001 - still running
        return None


def test_soft_limit_raises_in_the_task_thread_then_dead_letters_or_retries_as_configured(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    worker = start_worker("default", private_env, log_dir, *THREADS)
    try:
        soft = private_app.send_task("tests.spin", (20,), soft_time_limit=1, time_limit=30)
        retried = private_app.send_task("tests.retry_on_soft_limit", (ledger.key,), soft_time_limit=1, time_limit=30)
        beside = [private_app.send_task("tests.record", (ledger.key, 0.2)).id for _ in range(5)]
        with pytest.raises(SoftTimeLimitExceeded):
            soft.get(timeout=30)
        tally = ledger.wait_for([retried.id, *beside], timeout=30)
        dead = dead_letters(private_app, {soft.id})
        alive = worker.proc.poll() is None
    finally:
        worker.stop()
    assert alive, "a soft limit ends the task, not the process"
    assert not tally.lost and not tally.duplicated, tally
    assert dead == {soft.id}, "a task that did not handle its soft limit is dead-lettered"
    assert retried.state == "SUCCESS" and retried.id not in dead, "autoretry_for=SoftTimeLimitExceeded retried it"
    assert f"Soft time limit (1s) exceeded for tests.spin[{soft.id}]" in worker.log()


def test_a_task_run_eagerly_inside_a_task_leaves_the_outer_soft_limit_in_force(
    private_env: dict[str, str], private_app: FleetCelery, log_dir: Path
) -> None:
    worker = start_worker("default", private_env, log_dir, *THREADS)
    try:
        outer = private_app.send_task("tests.spin_after_eager", (20,), soft_time_limit=1, time_limit=30)
        # The inner run's end used to clear the outer task's limits: it then spun its whole 20 s.
        with pytest.raises(SoftTimeLimitExceeded):
            outer.get(timeout=15)
    finally:
        worker.stop()


def test_hard_limit_replaces_the_process_dead_letters_the_task_and_redelivers_the_others(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    worker = start_worker("default", private_env, log_dir, *THREADS)
    others = [private_app.send_task("tests.record", (ledger.key, 5)).id for _ in range(3)]
    hard = private_app.send_task("tests.stubborn", (60,), soft_time_limit=1, time_limit=2)
    code = exit_code(worker, timeout=30)
    if code is None:
        worker.kill()
    assert code == EXIT_HARD_LIMIT, worker.log()[-3000:]
    assert not ledger.completions(), "the other tasks were still running when the process went"
    replacement = start_worker("default", private_env, log_dir, *THREADS)
    try:
        tally = ledger.wait_for(others, timeout=60)
        dead = dead_letters(private_app, {hard.id})
    finally:
        replacement.stop()
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=10)
    assert dead == {hard.id}, "the timed-out task is dead-lettered, never run again"
    assert not tally.lost and not tally.duplicated and not tally.unexpected, tally
    assert f"Hard time limit (2s) exceeded for tests.stubborn[{hard.id}]" in worker.log()
    assert hard.id not in replacement.log(), "the timed-out task did not come back"


def test_kill_9_of_one_process_under_load_loses_nothing(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    # 400 x 0.2 s over 2 workers x 2 processes x 4 threads: ~5 s of work, so the kill lands mid-load
    # however fast the worker or slow the host (0.02 s tasks finished inside one 50 ms poll on CI)
    accepted = publish_many(private_app, [("tests.record", (ledger.key, 0.2), {}) for _ in range(400)])
    first = start_worker("default", private_env, log_dir, *THREADS, index=0)
    second = start_worker("default", private_env, log_dir, *THREADS, index=1)
    try:
        deadline = time.monotonic() + 60
        while len(ledger.completions()) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.kill()
        done_at_kill = len(ledger.completions())
        tally = ledger.wait_for(accepted, timeout=120)
    finally:
        second.stop()
    assert 0 < done_at_kill < 400, "the kill happened under load"
    assert not tally.lost and not tally.unexpected, tally


def test_a_task_that_kills_its_process_is_retried_against_max_retries_then_dead_lettered(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    """What prefork's main process does for a lost child, a threaded worker does on the redelivery:
    tests.poison (max_retries=2) kills its process every run; supervisor would restart it, the loop here does."""
    poison = private_app.send_task("tests.poison", (ledger.key,))
    beside = [private_app.send_task("tests.record", (ledger.key, 0)).id for _ in range(10)]
    dead: set[str] = set()
    tally = None
    for _ in range(8):
        worker = start_worker("default", private_env, log_dir, *THREADS)
        deadline = time.monotonic() + 15  # each run of the poison kills the process, or it is settled
        while worker.proc.poll() is None and not dead and time.monotonic() < deadline:
            dead = dead_letters(private_app, {poison.id}, timeout=0.2)
        if worker.proc.poll() is None:  # still alive: the poison task is settled
            dead = dead or dead_letters(private_app, {poison.id})
            # With this worker still up: a task that was running beside the poison when a process died
            # comes back as a retry 1 s later (default_retry_delay), held by this worker until due.
            tally = ledger.wait_for(beside, timeout=30)
            worker.stop()
            break
    assert tally is not None, "no worker outlived the poison task"
    runs = int(redis.Redis.from_url(REDIS_URL).get(f"{ledger.key}:poison-runs"))
    assert dead == {poison.id}, "the poison task ends in default.dlq"
    assert runs == 3, "max_retries=2: one run and two retries, then dead-lettered"
    assert poison.state == "FAILURE"
    assert not tally.lost, tally


def test_memory_recycling_stops_the_process_warmly_and_loses_nothing(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    env = {**private_env, "FLEET_POOL_DEFAULT_MAX_MEMORY_PER_CHILD_KB": "1000"}  # every process is above
    accepted = [private_app.send_task("tests.record", (ledger.key, 0.3)).id for _ in range(10)]
    codes = []
    for _ in range(10):
        worker = start_worker("default", env, log_dir, *THREADS)
        code = exit_code(worker, timeout=30)
        if code is None:
            worker.kill()
        codes.append(code)
        assert "stopping warmly to be restarted" in worker.log(), worker.log()[-3000:]
        if not ledger.tally(accepted).lost:
            break
    tally = ledger.tally(accepted)
    assert not tally.lost and not tally.duplicated and not tally.unexpected, tally
    assert set(codes) == {EXIT_RECYCLE}, codes
    assert len(codes) > 1, "each process stopped after its first tasks"


def test_a_backlog_runs_at_once_when_the_worker_consumes_again(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    """``add_consumer`` after a backlog built up: the worker's wait for consume-ok reads the first
    deliveries with it (fleet.read_ahead), and with its prefetch window full the broker sends nothing
    more. Those tasks must run now, not when the broker next has something to say: before
    fleet.read_ahead.read_buffered_frames, a third of such drains left 16 tasks unrun for 20 s."""
    worker = start_worker("default", private_env, log_dir, *THREADS)
    try:
        first = private_app.send_task("tests.record", (ledger.key,)).id
        assert not ledger.wait_for([first], timeout=60).lost, "the worker never started"
        pauses = open_pauses(private_app.fleet_settings)  # else the worker's heartbeat consumes again
        for _ in range(3):
            pauses.pause("default", "test")
            assert private_app.control.cancel_consumer("default", reply=True, timeout=10, limit=1)
            backlog = [private_app.send_task("tests.record", (ledger.key,)).id for _ in range(40)]
            pauses.resume("default")
            assert private_app.control.add_consumer("default", reply=True, timeout=10, limit=1)
            tally = ledger.wait_for(backlog, timeout=15)
            assert not tally.lost, f"{len(tally.lost)} of 40 tasks still unrun 15 s after add_consumer"
    finally:
        worker.stop()
