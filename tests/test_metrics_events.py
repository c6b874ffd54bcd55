"""Celery's own tools keep working: with FLEET_TASK_EVENTS=1, ``celery -A fleet inspect active``,
``celery -A fleet events`` and Flower pointed at the broker see the fleet's workers and tasks;
``fleet status`` shows queues, pools, workers and dead letters without Grafana."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fleet.celery_app import FleetCelery
from fleet.pools import get_pool
from fleet.testing.ports import free_port
from fleet.testing.processes import FLEET, FleetProcess, start_worker
from fleet.worker.run import node_name
from tests.support.apps import app_for
from tests.support.metrics import private_fleet, wait_for_scrape
from tests.support.peers import HTTPPeer, SMTPPeer

CELERY = str(Path(sys.executable).with_name("celery"))


@pytest.fixture(scope="module")
def evented(
    fleet_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory, celery_app: FleetCelery
) -> Iterator[dict[str, Any]]:
    with private_fleet(fleet_env, tmp_path_factory.mktemp("events")) as env:
        env = {**env, "FLEET_TASK_EVENTS": "1", "FLOWER_UNAUTHENTICATED_API": "true"}
        with app_for(env) as app:
            worker = start_worker("default", env, log_dir)
            flower_port = free_port()
            flower = FleetProcess(
                [CELERY, "-A", "fleet", "flower", "--address=127.0.0.1", f"--port={flower_port}"],
                env,
                log_dir / "flower.log",
            ).start()
            events = FleetProcess([CELERY, "-A", "fleet", "events", "--dump"], env, log_dir / "events.log").start()
            try:
                flower.wait_for_log("Visit me at", timeout=60)
                events.wait_for_log("heartbeat", timeout=60)  # the dump is live
                yield {"app": app, "env": env, "flower": f"http://127.0.0.1:{flower_port}", "events": events}
            finally:
                for process in (events, flower, worker):
                    process.stop()


def _celery(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([CELERY, "-A", "fleet", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_inspect_events_and_flower_see_the_workers_and_tasks(evented: dict[str, Any]) -> None:
    app, env = evented["app"], evented["env"]
    node = node_name(get_pool("default"))
    slow = app.send_task("tasks.process_data", (1,), {"rows": 10, "step_delay": 1.0})  # ~4 s
    deadline = time.monotonic() + 30
    while slow.state != "PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.1)
    active = json.loads(_celery(env, "inspect", "active", "--json", "--timeout=5"))
    assert [task["id"] for task in active[node]] == [slow.id]
    assert active[node][0]["name"] == "tasks.process_data"
    slow.get(timeout=30)

    evented["events"].wait_for_log(slow.id, timeout=30)
    deadline = time.monotonic() + 30
    while "task succeeded" not in (dump := evented["events"].log()) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = [line for line in dump.splitlines() if slow.id in line]
    assert any("task received" in line for line in lines) and any("task succeeded" in line for line in lines), lines
    assert any(node in line and "heartbeat" in line for line in dump.splitlines())

    flower = evented["flower"]
    workers = requests.get(f"{flower}/api/workers", params={"refresh": "1"}, timeout=30).json()
    assert node in workers
    deadline = time.monotonic() + 30
    while (task := requests.get(f"{flower}/api/task/info/{slow.id}", timeout=10)).status_code != 200 or task.json().get(
        "state"
    ) != "SUCCESS":
        assert time.monotonic() < deadline, task.text
        time.sleep(0.5)
    assert task.json()["worker"] == node and task.json()["name"] == "tasks.process_data"


def test_fleet_status_shows_queues_pools_workers_and_dead_letters(evented: dict[str, Any], http_peer: HTTPPeer) -> None:
    app, env = evented["app"], evented["env"]
    failed = app.send_task("tasks.call_external_api", (http_peer.script("/status-gone", [404]),))
    failed.get(timeout=60, propagate=False)
    facts = json.loads(
        subprocess.run(
            [FLEET, "status", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    queues = {q["queue"]: q for q in facts["queues"]}
    assert set(queues) == {"high_priority", "email", "reports", "default"}
    assert queues["default"]["consumers"] == 1 and queues["email"]["consumers"] == 0
    assert queues["default"]["dead_letters"] == 1
    pools = {p["pool"]: p for p in facts["pools"]}
    assert pools["default"]["workers"] == 1 and pools["default"]["concurrency"] == get_pool("default").concurrency
    assert pools["email"]["workers"] == 0
    assert [w["node"] for w in facts["workers"]] == [node_name(get_pool("default"))]
    text = subprocess.run([FLEET, "status"], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "DOWN" in text.split("POOLS")[1] and "dead letters" in text


def test_a_worker_started_by_celery_itself_exports_metrics_too(
    evented: dict[str, Any], log_dir: Path, smtp: SMTPPeer
) -> None:
    """``celery -A fleet worker -Q email -P threads``: the pool is known by its queues, the port is the base."""
    env = evented["env"]
    argv = [
        CELERY,
        "-A",
        "fleet",
        "worker",
        "-Q",
        "email",
        "-P",
        "threads",
        "-c",
        "4",
        "--hostname=plain@%h",
        "-l",
        "info",
    ]
    worker = FleetProcess(argv, env, log_dir / "celery-worker.log").start()
    try:
        worker.wait_for_log(" ready.", timeout=90)
        evented["app"].send_task("tasks.send_email", ("plain@example.test", "hi", "body")).get(timeout=60)
        port = int(env["FLEET_METRICS_PORT"])
        scrape = wait_for_scrape(port, lambda s: s.total("fleet_tasks_succeeded_total", queue="email") == 1)
        assert scrape.series("fleet_worker_info") == [
            {
                "pool": "email",
                "kind": "threads",
                "queues": "email",
                "version": scrape.series("fleet_worker_info")[0]["version"],
            }
        ]
        assert scrape.total("fleet_tasks_received_total", queue="email", task="tasks.send_email") == 1
    finally:
        worker.stop()
