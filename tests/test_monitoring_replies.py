"""Worker monitoring stops waiting once every worker replied, and still lists every worker.

The expected reply count is the larger of the fresh heartbeat files (workers on this machine)
and the work queues' consumer count (workers anywhere): here one worker shares the API's var
directory and one does not, as if on another machine, and both must be listed.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.testing.processes import FLEET, FleetProcess, start_workers
from fleet.worker.health import expected_replies, health_dir
from tests.support.api import ApiServer

HOST = socket.gethostname()
NODES = {f"default@{HOST}", f"email@{HOST}"}


@pytest.fixture
def two_workers(private_env: dict[str, str], log_dir: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    here = start_workers(["default"], private_env, log_dir)
    elsewhere = start_workers(["email"], {**private_env, "FLEET_VAR_DIR": str(tmp_path / "other-host")}, log_dir)
    workers: list[FleetProcess] = [*here.values(), *elsewhere.values()]
    try:
        yield private_env
    finally:
        for worker in workers:
            worker.stop()


def _timed(call: object, runs: int = 5) -> tuple[object, float]:
    times, result = [], None
    for _ in range(runs):
        started = time.monotonic()
        result = call()  # type: ignore[operator]
        times.append(time.monotonic() - started)
    return result, round(statistics.median(times) * 1000)


def test_every_worker_is_listed_by_the_api_and_fleet_status(two_workers: dict[str, str], log_dir: Path) -> None:
    env = two_workers
    assert expected_replies(Path(env["FLEET_VAR_DIR"]), consumers=2) == 2
    api = ApiServer(env, log_dir).start()
    figures = {}
    try:
        workers, figures["/api/monitoring/workers ms"] = _timed(lambda: api.get("/api/monitoring/workers").json())
        assert {w["name"] for w in workers["workers"]} == NODES and workers["count"] == 2  # type: ignore[index]
        assert all(w["concurrency"] for w in workers["workers"])  # type: ignore[index]
        health, figures["/api/monitoring/health ms"] = _timed(lambda: api.get("/api/monitoring/health"))
        assert health.status_code == 200 and health.json()["workers"] == 2  # type: ignore[attr-defined]
    finally:
        api.stop()

    def status() -> dict:
        done = subprocess.run([FLEET, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    facts, figures["fleet status ms (process included)"] = _timed(status, runs=3)
    assert {w["node"] for w in facts["workers"]} == NODES  # type: ignore[index]
    print(f"\nmonitoring figures (median): {figures}")


def test_expected_replies_counts_fresh_heartbeats_and_consumers(tmp_path: Path) -> None:
    directory = health_dir(tmp_path)
    directory.mkdir()
    assert expected_replies(tmp_path, consumers=0) is None, "nothing says a worker runs: wait out the timeout"
    for node in ("a@h", "b@h", "gone@h"):
        (directory / f"{node}.heartbeat").touch()
    stale = time.time() - 3600
    os.utime(directory / "gone@h.heartbeat", (stale, stale))  # killed without cleaning up
    assert expected_replies(tmp_path, consumers=1) == 2
    assert expected_replies(tmp_path, consumers=5) == 5, "workers elsewhere count too"
