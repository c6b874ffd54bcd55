"""Faults of the broker and of whole workers, with every accepted task accounted for.

Broker faults run on a disposable RabbitMQ node (own ports, own data); the shared
node is never touched.
"""

from __future__ import annotations

import time
from pathlib import Path

from fleet.celery_app import FleetCelery
from fleet.publish import publish_many
from fleet.testing.processes import FLEET, FleetProcess, start_worker
from tests.support.apps import app_for
from tests.support.disposable_rabbit import DisposableRabbit
from tests.support.ledger import Ledger


def _env_on(node: DisposableRabbit, base_env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**base_env, "CELERY_BROKER_URL": node.url, "FLEET_VAR_DIR": str(tmp_path / "var"), **extra}


def test_broker_killed_and_restarted_with_2000_confirmed_tasks_queued(
    fleet_env: dict[str, str], tmp_path: Path, ledger: Ledger, log_dir: Path
) -> None:
    with DisposableRabbit() as node:
        env = _env_on(node, fleet_env, tmp_path)
        with app_for(env) as app:
            accepted = publish_many(app, [("tests.record", (ledger.key, 0.005), {}) for _ in range(2000)], timeout=60)
        worker = start_worker("default", env, log_dir)
        try:
            deadline = time.monotonic() + 60
            while len(ledger.completions()) < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            node.kill()
            time.sleep(2)
            node.start()
            tally = ledger.wait_for(accepted, timeout=240)
            assert worker.proc.poll() is None, "the worker rode out the outage without a restart"
        finally:
            worker.stop()
    assert not tally.lost and not tally.unexpected, tally
    # The node is back within seconds: a longer wait is the worker stalled after reconnecting
    # (task threads and the event loop once all waited on one socket until RabbitMQ dropped it, 90 s).
    assert tally.longest_stall < 30, tally
    print(f"broker kill -9 with 2000 queued: {tally}")


def test_worker_killed_under_load_redelivers_its_unacked_tasks(
    private_env: dict[str, str], private_app: FleetCelery, ledger: Ledger, log_dir: Path
) -> None:
    # ~4 s of work on one worker: the kill lands mid-load however fast the worker
    accepted = publish_many(private_app, [("tests.record", (ledger.key, 0.1), {}) for _ in range(300)])
    worker = start_worker("default", private_env, log_dir)
    deadline = time.monotonic() + 60
    while len(ledger.completions()) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.kill()  # SIGKILL to the main process and its children
    done_at_kill = len(ledger.completions())
    replacement = start_worker("default", private_env, log_dir)
    try:
        tally = ledger.wait_for(accepted, timeout=120)
    finally:
        replacement.stop()
    assert 0 < done_at_kill < 300, "the kill happened under load"
    assert not tally.lost and not tally.unexpected, tally
    print(f"worker kill -9 at {done_at_kill}/300: {tally}")


def test_countdown_longer_than_the_consumer_timeout_runs_once_and_no_channel_is_lost(
    fleet_env: dict[str, str], tmp_path: Path, ledger: Ledger, log_dir: Path
) -> None:
    with DisposableRabbit(consumer_timeout=60) as node:
        env = _env_on(
            node,
            fleet_env,
            tmp_path,
            FLEET_BROKER_CONSUMER_TIMEOUT="60",
            FLEET_POOL_DEFAULT_SOFT_TIME_LIMIT="40",
            FLEET_POOL_DEFAULT_TIME_LIMIT="50",
        )
        # A pool whose hard limit exceeds the consumer timeout is refused at start.
        refused = FleetProcess([FLEET, "worker", "reports"], env, log_dir / "refused.log").start()
        assert refused.proc.wait(60) != 0
        assert "consumer_timeout" in refused.log()

        worker = start_worker("default", env, log_dir)
        try:
            with app_for(env) as app:
                sent = time.time()
                late = app.send_task("tests.record", (ledger.key,), countdown=90)
                prompt = app.send_task("tests.record", (ledger.key,))
            tally = ledger.wait_for([late.id, prompt.id], timeout=150)
            ran_after = time.time() - sent
            time.sleep(2)
        finally:
            worker.stop()
        node_log = node.log_tail(200_000)
    assert not tally.lost and not tally.duplicated, tally
    assert ran_after >= 90, "it ran after its countdown"
    assert "delivery acknowledgement" not in node_log and "PRECONDITION_FAILED" not in worker.log()
    assert f"parked task {late.id}" in worker.log()
