"""A rollout or a scale-in stops a worker with TERM: the stop is bounded by the pool's soft
shutdown (fleet.worker.shutdown), not its hard time limit, and the tasks it cancels run elsewhere."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from fleet.celery_app import FleetCelery
from fleet.deploy.supervisor import stop_wait
from fleet.pools import PoolError, get_pool, with_overrides
from fleet.publish import publish_many
from fleet.settings import load_settings
from fleet.testing.broker import queue_depth
from fleet.testing.processes import start_worker
from fleet.worker.run import resolve_pool
from tests.support.ledger import Ledger

SOFT_SHUTDOWN_S = 4
#: longer than the whole stop may take, so a stop that waited for them would show
LONG_TASK_S = 25.0


def test_term_mid_load_stops_within_the_soft_shutdown_bound_and_loses_nothing(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    env = {**private_env, "FLEET_POOL_DEFAULT_SOFT_SHUTDOWN_TIMEOUT": str(SOFT_SHUTDOWN_S)}
    spec = resolve_pool("default", load_settings(env))
    bound = stop_wait(spec)  # what supervisor's stopwaitsecs and Kubernetes' grace period allow
    assert spec.soft_shutdown_timeout == SOFT_SHUTDOWN_S and bound < LONG_TASK_S

    worker = start_worker("default", env, log_dir)
    long = publish_many(private_app, [("tests.record", (ledger.key, LONG_TASK_S), {})] * spec.concurrency)
    short = publish_many(private_app, [("tests.record", (ledger.key, 0.1), {})] * 20)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # every pool process busy with a long task
        active = private_app.control.inspect(timeout=1).active() or {}
        if sum(len(tasks) for tasks in active.values()) >= spec.concurrency:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the long tasks never ran:\n{worker.log()[-3000:]}")

    asked = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(bound + 30)
    stopped_in = time.monotonic() - asked
    replacement = start_worker("default", env, log_dir)
    try:
        tally = ledger.wait_for([*long, *short], timeout=LONG_TASK_S + 90)
    finally:
        replacement.stop()
    print(f"rollout: TERM -> exit in {stopped_in:.1f} s (soft shutdown {SOFT_SHUTDOWN_S} s, bound {bound} s); {tally}")
    assert "Soft Shutdown" in worker.log(), worker.log()[-3000:]
    assert stopped_in < bound, "stopped within soft_shutdown_timeout + the margin, not the hard time limit"
    assert not tally.lost and not tally.unexpected, tally


def test_a_soft_shutdown_as_long_as_the_hard_limit_is_refused() -> None:
    spec = get_pool("reports")
    with pytest.raises(PoolError, match="soft_shutdown_timeout"):
        with_overrides(spec, {"soft_shutdown_timeout": str(spec.time_limit)}).check(consumer_timeout=1800)
    with pytest.raises(PoolError, match="above 0"):
        with_overrides(spec, {"soft_shutdown_timeout": "0"})


#: long enough that a stop which slept it out would show, far below `default`'s 120 s time limit
LONG_SOFT_SHUTDOWN_S = 60


def test_term_on_a_threaded_pool_stops_once_its_tasks_are_done_not_after_the_whole_soft_shutdown(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    env = {**private_env, "FLEET_POOL_DEFAULT_SOFT_SHUTDOWN_TIMEOUT": str(LONG_SOFT_SHUTDOWN_S)}
    spec = resolve_pool("default", load_settings(env))
    assert spec.pool == "threads"
    worker = start_worker("default", env, log_dir)
    running = publish_many(private_app, [("tests.record", (ledger.key, 4.0), {})] * spec.concurrency)
    deadline = time.monotonic() + 60
    while sum(len(tasks) for tasks in (private_app.control.inspect(timeout=1).active() or {}).values()) < len(running):
        assert time.monotonic() < deadline, f"the tasks never ran:\n{worker.log()[-3000:]}"

    asked = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    code = worker.proc.wait(LONG_SOFT_SHUTDOWN_S + 30)
    stopped_in = time.monotonic() - asked
    tally = ledger.tally(set(running))
    print(f"threaded stop: TERM -> exit {code} in {stopped_in:.1f} s (soft shutdown {LONG_SOFT_SHUTDOWN_S} s); {tally}")
    assert "Soft Shutdown" in worker.log(), worker.log()[-3000:]
    assert code == 0, worker.log()[-3000:]
    assert stopped_in < LONG_SOFT_SHUTDOWN_S / 2, "the stop ended with the tasks, not with the soft shutdown's timeout"
    assert not tally.lost and not tally.duplicated and not tally.unexpected, tally
    assert queue_depth(private_app.conf.broker_url, "default") == (0, 0), "the finished tasks were acked"
