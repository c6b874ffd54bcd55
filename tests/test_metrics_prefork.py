"""One prefork worker (concurrency 4, a new child every 5 tasks) runs 300 tasks of a known mix:
one scrape shows exactly those counts, and the metrics directory stays small."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from fleet.celery_app import FleetCelery
from fleet.metrics.setup import node_directory
from fleet.pools import get_pool, metrics_port
from fleet.settings import load_settings
from fleet.testing.processes import start_worker
from fleet.worker.run import node_name
from tests.support.apps import app_for
from tests.support.metrics import Scrape, private_fleet, wait_for_scrape
from tests.support.peers import HTTPPeer

SUCCEED, FAIL, RETRY_ONCE = 200, 50, 50  # 300 tasks
CONCURRENCY, MAX_TASKS_PER_CHILD = 4, 5
RUNS = SUCCEED + FAIL + 2 * RETRY_ONCE  # a retried task runs twice
FILE_TYPES = 3  # counter, histogram, gauge_livesum per process
FILE_BOUND = FILE_TYPES * (1 + CONCURRENCY) + 2  # main process + live children + 2 archives


class FileCounter(threading.Thread):
    """Samples how many metric files the directory holds while the work runs."""

    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.most = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.most = max(self.most, sum(1 for _ in self.directory.glob("*.db")))
            time.sleep(0.02)


@pytest.fixture(scope="module")
def worker(
    fleet_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory, celery_app: FleetCelery
) -> Iterator[dict]:
    with private_fleet(fleet_env, tmp_path_factory.mktemp("prefork")) as private:
        env = {**private, "FLEET_TASK_MODULES": f"{private['FLEET_TASK_MODULES']},tests.support.metrics_tasks"}
        settings = load_settings(env)
        flags = (
            "--pool-kind",
            "prefork",
            "--concurrency",
            str(CONCURRENCY),
            "--max-tasks-per-child",
            str(MAX_TASKS_PER_CHILD),
        )
        with app_for(env) as app:
            process = start_worker("default", env, log_dir, *flags)
            try:
                yield {
                    "app": app,
                    "port": metrics_port(settings.metrics_port, "default"),
                    "directory": node_directory(settings, node_name(get_pool("default"))),
                }
            finally:
                process.stop()


def test_one_scrape_shows_exactly_the_work_done(worker: dict, http_peer: HTTPPeer) -> None:
    app: Celery = worker["app"]
    files = FileCounter(worker["directory"])
    files.start()
    ok = http_peer.script("/metrics-ok", [200])
    gone = http_peer.script("/metrics-gone", [404])
    calls = [ok] * SUCCEED + [gone] * FAIL
    calls += [http_peer.script(f"/metrics-flaky-{n}", [503, 200]) for n in range(RETRY_ONCE)]
    results = [app.send_task("tasks.call_external_api", (url,)) for url in calls]
    states = [r.get(timeout=180, propagate=False) and r.state for r in results]
    assert states.count("SUCCESS") == SUCCEED + RETRY_ONCE and states.count("FAILURE") == FAIL

    def settled(s: Scrape) -> bool:
        ended = ("fleet_tasks_succeeded_total", "fleet_tasks_failed_total", "fleet_tasks_retried_total")
        return s.total("fleet_task_runtime_seconds_count") == RUNS and sum(map(s.total, ended)) == RUNS

    wait_for_scrape(worker["port"], settled)
    files.running = False
    scrape = Scrape.of(worker["port"])  # the one scrape every figure below comes from
    task = {"queue": "default", "task": "tasks.call_external_api"}
    assert scrape.total("fleet_tasks_received_total", **task) == SUCCEED + FAIL + 2 * RETRY_ONCE
    assert scrape.total("fleet_tasks_started_total", **task) == RUNS
    assert scrape.total("fleet_tasks_succeeded_total", **task) == SUCCEED + RETRY_ONCE
    assert scrape.total("fleet_tasks_failed_total", **task) == FAIL
    assert scrape.total("fleet_tasks_failed_total", exception="PermanentHTTPError", **task) == FAIL
    assert scrape.total("fleet_tasks_retried_total", **task) == RETRY_ONCE
    for name in ("rejected", "revoked", "worker_lost"):
        assert scrape.total(f"fleet_tasks_{name}_total") == 0, name
    assert scrape.total("fleet_tasks_in_progress") == 0
    # histograms: every run has a runtime; the retries' countdown messages have no queue wait
    assert scrape.total("fleet_task_runtime_seconds_count", **task) == RUNS
    assert scrape.total("fleet_task_runtime_seconds_bucket", le="+Inf", **task) == RUNS
    assert scrape.total("fleet_task_queue_wait_seconds_count", **task) == SUCCEED + FAIL + RETRY_ONCE
    assert scrape.total("fleet_task_queue_wait_seconds_bucket", le="+Inf", **task) == SUCCEED + FAIL + RETRY_ONCE
    # failures were rejected into the dead-letter queue
    assert scrape.total("fleet_queue_dead_letters", queue="default") == FAIL
    # children were recycled every 5 runs: all but the live ones' partial runs
    recycled = scrape.total("fleet_worker_child_restarts_total", reason="recycled")
    assert (
        (RUNS - CONCURRENCY * (MAX_TASKS_PER_CHILD - 1)) / MAX_TASKS_PER_CHILD <= recycled <= RUNS / MAX_TASKS_PER_CHILD
    )
    assert scrape.total("fleet_worker_child_restarts_total", reason="lost") == 0
    # every queue x task series exists, at zero where nothing happened
    names = {labels["task"] for labels in scrape.series("fleet_tasks_received_total")}
    assert {"tasks.send_email", "tasks.generate_report", "other"} <= names
    assert all(
        "hostname" not in labels and "task_id" not in labels for labels in scrape.series("fleet_tasks_failed_total")
    )
    # bounded files: without folding exited children it would be ~3 per child ever started
    final = sum(1 for _ in worker["directory"].glob("*.db"))
    print(
        f"\nmetrics files: {final} at the end, {files.most} at most during the run (bound {FILE_BOUND}); "
        f"{recycled:.0f} children recycled"
    )
    assert files.most <= FILE_BOUND and final <= FILE_BOUND


def _running_pid(app: Celery, task_id: str, timeout: float = 30) -> int:
    """The pool child running ``task_id``, as the worker reports it.

    The test runs one worker: the inspect stops at its reply instead of waiting out the
    timeout, so the pid is known while the task still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tasks in (app.control.inspect(timeout=2, limit=1).active() or {}).values():
            for task in tasks:
                if task["id"] == task_id and task.get("worker_pid"):
                    return task["worker_pid"]
        time.sleep(0.2)
    raise AssertionError(f"{task_id} never seen running")


def test_a_killed_child_and_time_limits_are_counted_and_nothing_goes_backwards(worker: dict) -> None:
    app: Celery = worker["app"]
    before = Scrape.of(worker["port"])
    sleeper = {"queue": "default", "task": "tests.sleep"}
    outliver = {"queue": "default", "task": "tests.outlive_soft_limit"}
    # a child killed -9 mid-task: the task is retried on a new child and succeeds
    lost = app.send_task("tests.sleep", (4,))
    os.kill(_running_pid(app, lost.id), signal.SIGKILL)
    assert lost.get(timeout=60) == 4
    # past its soft time limit a task fails (and is dead-lettered) ...
    soft = app.send_task("tests.sleep", (10,), soft_time_limit=1, time_limit=8)
    # ... one that outlives its soft limit is killed at the hard limit, with its child, by the main process
    hard = app.send_task("tests.outlive_soft_limit", (10,), soft_time_limit=1, time_limit=2)
    for result in (soft, hard):
        result.get(timeout=60, propagate=False)
    assert (soft.state, hard.state) == ("FAILURE", "FAILURE")

    def delta(s: Scrape, name: str, **labels: str) -> float:
        return s.total(name, **labels) - before.total(name, **labels)

    def settled(s: Scrape) -> bool:
        lost_children = delta(s, "fleet_worker_child_restarts_total", reason="lost")
        return lost_children == 2 and delta(s, "fleet_tasks_failed_total", **sleeper) == 1

    after = wait_for_scrape(worker["port"], settled)
    assert delta(after, "fleet_tasks_worker_lost_total", **sleeper) == 1
    assert delta(after, "fleet_tasks_retried_total", **sleeper) == 1  # task_retry_on_worker_lost
    assert delta(after, "fleet_tasks_started_total", **sleeper) == 3  # the killed run's count survived its process
    assert delta(after, "fleet_tasks_succeeded_total", **sleeper) == 1
    assert delta(after, "fleet_tasks_failed_total", exception="SoftTimeLimitExceeded", **sleeper) == 1
    assert delta(after, "fleet_task_time_limit_hits_total", limit="soft", **sleeper) == 1
    assert delta(after, "fleet_task_runtime_seconds_count", **sleeper) == 2  # the killed run has no runtime
    assert delta(after, "fleet_tasks_started_total", **outliver) == 1
    assert delta(after, "fleet_tasks_failed_total", **outliver) == 1  # Celery reports it twice: counted once
    assert delta(after, "fleet_tasks_failed_total", exception="TimeLimitExceeded", **outliver) == 1
    assert delta(after, "fleet_task_time_limit_hits_total", limit="soft", **outliver) == 1
    assert delta(after, "fleet_task_time_limit_hits_total", limit="hard", **outliver) == 1
    assert delta(after, "fleet_task_runtime_seconds_count", **outliver) == 1  # recorded by the main process
    assert after.total("fleet_tasks_in_progress") == 0  # the dead children's gauges left with them
    for name, samples in before.samples.items():  # counters never go backwards
        if name.endswith(("_total", "_count", "_bucket", "_sum")):
            assert all(after.total(name, **labels) >= value for labels, value in samples), name
