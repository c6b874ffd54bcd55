"""Celery's own commands work on the fleet as Celery users expect."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.result import AsyncResult

from fleet.celery_app import FleetCelery
from fleet.pools import POOLS
from fleet.testing.processes import FleetProcess
from tests.support.peers import SMTPPeer

CELERY = str(Path(sys.executable).with_name("celery"))


def _celery(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([CELERY, "-A", "fleet", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.usefixtures("fleet_workers")
def test_inspect_ping_and_call(fleet_env: dict[str, str], celery_app: FleetCelery) -> None:
    pong = _celery(fleet_env, "inspect", "ping", "--timeout", "5")
    for pool in POOLS:
        assert f"{pool}@" in pong
    task_id = _celery(fleet_env, "call", "tasks.fetch_data", "--args", "[4, 3]").strip()
    assert AsyncResult(task_id, app=celery_app).get(timeout=30)["source_id"] == 4


def test_plain_celery_worker_consumes_one_queue(
    private_env: dict[str, str], private_app: FleetCelery, smtp: SMTPPeer, log_dir: Path
) -> None:
    worker = FleetProcess(
        [CELERY, "-A", "fleet", "worker", "-Q", "email", "-n", "plain@%h", "-c", "2", "-l", "info"],
        private_env,
        log_dir / "plain.log",
    ).start()
    try:
        worker.wait_for_log(" ready.", timeout=90)
        result = private_app.send_task("tasks.send_email", ("plain@example.test", "s", "b"))
        assert result.get(timeout=30)["status"] == "success"
        assert result.worker.startswith("plain@")
        report = private_app.send_task("tasks.generate_report", ("sales",))
        time.sleep(2)
        assert report.state == "PENDING", "a worker consuming email never runs a reports task"
    finally:
        worker.stop()
    smtp.wait_for("plain@example.test")
