"""A worker that gives up exits non-zero, so supervisor and Kubernetes see a crash, not a clean stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from fleet.testing.broker import Vhost, rabbitmqctl
from fleet.testing.ports import free_port_block
from fleet.testing.processes import FLEET, FleetProcess, start_worker

CELERY = str(Path(sys.executable).with_name("celery"))


@pytest.mark.parametrize(
    "argv",
    [[FLEET, "worker", "default"], [CELERY, "-A", "fleet", "worker", "-Q", "default", "-c", "1"]],
    ids=["fleet worker", "celery worker"],
)
def test_an_unrecoverable_error_exits_non_zero(
    argv: list[str], fleet_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    """A broker account that may not declare anything (a real misconfiguration): Celery's
    consumer gets ACCESS_REFUSED, a channel error it does not retry, and gives up."""
    vhost = Vhost().create()
    try:
        rabbitmqctl("set_permissions", "-p", vhost.name, "guest", "^$", ".*", ".*")  # configure nothing
        env = {
            **fleet_env,
            "CELERY_BROKER_URL": vhost.url,
            "FLEET_VAR_DIR": str(tmp_path / "var"),
            "FLEET_METRICS_PORT": str(free_port_block(8)),
            "FLEET_METRICS_DIR": str(tmp_path / "metrics"),
        }
        worker = FleetProcess(argv, env, log_dir / f"unrecoverable-{time.time_ns()}.log").start()
        try:
            code = worker.proc.wait(120)
        finally:
            worker.kill()
        log = worker.log()
        assert "Unrecoverable error" in log and "ACCESS_REFUSED" in log, log[-3000:]
        assert code != 0, f"{argv[0]} gave up but exited {code}"
    finally:
        vhost.delete()


def test_a_warm_shutdown_still_exits_zero(private_env: dict[str, str], log_dir: Path, tmp_path: Path) -> None:
    """TERM on an idle worker is Celery's warm stop (fleet.worker.term), not the cold path whose
    broker calls inside the signal handler now and then ended in an "Unrecoverable error"."""
    env = {**private_env, "FLEET_METRICS_PORT": str(free_port_block(8)), "FLEET_METRICS_DIR": str(tmp_path / "m")}
    worker = start_worker("default", env, log_dir)
    code = worker.stop()
    log = worker.log()
    assert code == 0, log[-4000:]
    assert "Warm shutdown (MainProcess)" in log and "Cold shutdown" not in log, log[-4000:]
