"""The committed supervisor config run by a real supervisord: every program RUNNING, and stopping a
pool with 40 tasks in flight is a warm shutdown that loses none of them.

The default pool (processes x threads) runs with FLEET_POOL_DEFAULT_CONCURRENCY=10 here: each
process may hold 40 (10 x prefetch 4), so when ``supervisorctl stop`` sends TERM to every process
of the pool, the tasks running finish and the prefetched ones go back: all 40 are in the pool's hands.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.celery_app import FleetCelery
from fleet.pools import POOLS
from fleet.testing.broker import Vhost, queue_depth
from fleet.testing.ports import free_port, free_port_block
from fleet.worker.health import NodeFiles, health_dir
from queues import dlq_name
from tests.support import procfs
from tests.support.apps import app_for
from tests.support.supervised import Supervisor, clean_env, wait_http_ok

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = 2 + sum(spec.replicas for spec in POOLS.values())  # api + beat + every worker process
TASKS = 40
CONCURRENCY = 10  # a process, x prefetch 4: the pool holds all 40 at once
PROCESSES = [f"fleet:default-{i}" for i in range(POOLS["default"].replicas)]
STEP_DELAY = 0.75  # process_data has 4 steps: ~3 s a task

pytestmark = pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "fleet").exists(), reason="the rendered config runs FLEET_HOME/.venv/bin/fleet"
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Supervisor, dict[str, str], dict]]:
    vhost = Vhost().create()
    api_port = free_port()
    env = clean_env(
        FLEET_HOME=str(ROOT),
        FLEET_VAR_DIR=str(tmp_path_factory.mktemp("supervised-var")),
        CELERY_BROKER_URL=vhost.url,
        FLEET_API_BIND=f"127.0.0.1:{api_port}",
        FLEET_METRICS_PORT=str(free_port_block(PROGRAMS)),
        FLEET_POOL_DEFAULT_CONCURRENCY=str(CONCURRENCY),
    )
    supervisor = Supervisor(ROOT, env)
    started = time.monotonic()
    supervisor.start()
    figures: dict = {}
    try:
        supervisor.wait_running(PROGRAMS)
        figures["all RUNNING (s)"] = round(time.monotonic() - started, 1)
        wait_http_ok(f"http://127.0.0.1:{api_port}/healthz", timeout=60)
        yield supervisor, env, figures
    finally:
        supervisor.stop()
        vhost.delete()
        print(f"\nsupervisor figures: {figures}")


def _nodes() -> list[str]:
    host = socket.gethostname()
    return [f"{spec.name}-{i}@{host}" for spec in POOLS.values() for i in range(spec.replicas)]


def _wait_ready(env: dict[str, str], timeout: float = 90) -> None:
    directory = health_dir(Path(env["FLEET_VAR_DIR"]))
    deadline = time.monotonic() + timeout
    while not all(NodeFiles.of(directory, node).ready.exists() for node in _nodes()):
        assert time.monotonic() < deadline, f"not every worker ready: {sorted(p.name for p in directory.iterdir())}"
        time.sleep(0.3)


def test_every_program_reaches_running(fleet: tuple[Supervisor, dict[str, str], dict]) -> None:
    supervisor, env, figures = fleet
    states = supervisor.states()
    expected = {"fleet:api-0", "fleet:beat-0"} | {
        f"fleet:{spec.name}-{i}" for spec in POOLS.values() for i in range(spec.replicas)
    }
    assert states == dict.fromkeys(expected, "RUNNING")
    started = time.monotonic()
    _wait_ready(env)
    figures["every worker ready after RUNNING (s)"] = round(time.monotonic() - started, 1)
    for spec in POOLS.values():
        for i in range(spec.replicas):
            log = supervisor.program_log(f"{spec.name}-{i}")
            assert f"{spec.name}-{i}@{socket.gethostname()} ready." in log, "a unique node name per process"
    # supervisord's programs share its session (one autogroup): each worker's own niceness orders them,
    # and none may renice the shared autogroup, which would renice high_priority with it
    for spec in POOLS.values():
        for i in range(spec.replicas):
            pid = int(supervisor.ctl("pid", f"fleet:{spec.name}-{i}").stdout)
            for process in procfs.tree(pid):
                assert set(procfs.thread_nices(process).values()) == {spec.nice}, f"{spec.name}-{i}: {process}"
            assert procfs.autogroup_nice(pid) in (None, 0), "the fleet's shared autogroup keeps nice 0"
    assert "beat: Starting..." in supervisor.program_log("beat-0")
    assert "CRIT" not in supervisor.log(), "a quiet start: user stated, socket authenticated"


def _states(app: FleetCelery, ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task_id in ids:
        state = app.AsyncResult(task_id).state
        counts[state] = counts.get(state, 0) + 1
    return counts


def test_stopping_a_pool_with_tasks_in_flight_loses_none(fleet: tuple[Supervisor, dict[str, str], dict]) -> None:
    supervisor, env, figures = fleet
    _wait_ready(env)
    url = env["CELERY_BROKER_URL"]
    with app_for(env) as app:
        results = [
            app.send_task("tasks.process_data", (9000 + n,), {"rows": 200, "step_delay": STEP_DELAY})
            for n in range(TASKS)
        ]
        ids = [r.id for r in results]
        prefetch = CONCURRENCY * POOLS["default"].prefetch_multiplier * POOLS["default"].replicas
        deadline = time.monotonic() + 60
        while queue_depth(url, "default")[0] > max(TASKS - prefetch, 0):  # the pool holds all it may prefetch
            assert time.monotonic() < deadline, queue_depth(url, "default")
            time.sleep(0.1)
        # Prefetched is not started: TERM lands once a process's worth runs (PROGRESS from the first step).
        while _states(app, ids).get("PROGRESS", 0) < CONCURRENCY:
            assert time.monotonic() < deadline, _states(app, ids)
            time.sleep(0.1)
        in_flight = TASKS - queue_depth(url, "default")[0]
        running = _states(app, ids).get("PROGRESS", 0)
        stopping = time.monotonic()
        stop = supervisor.ctl("stop", *PROCESSES)
        figures["stop took (s)"] = round(time.monotonic() - stopping, 1)
        for program in PROCESSES:
            name = program.removeprefix("fleet:")
            assert f"{name}: stopped" in stop.stdout, stop.stdout + stop.stderr
            assert f"stopped: {name} (exit status 0)" in supervisor.log(), "TERM, not KILL: " + supervisor.log()[-2000:]
        # TERM on a busy worker is Celery's soft shutdown (fleet.worker.term): running tasks get the pool's timeout
        assert any("Initiating Soft Shutdown" in supervisor.program_log(p.removeprefix("fleet:")) for p in PROCESSES)
        after_stop = _states(app, ids)
        done_in_shutdown = after_stop.get("SUCCESS", 0)
        ready, consumers = queue_depth(url, "default")
        assert consumers == 0
        assert done_in_shutdown + ready == TASKS, f"nothing in limbo: {after_stop}, {ready} back in the queue"
        assert done_in_shutdown >= running, "the tasks running at TERM finished"

        assert "default-0: started" in supervisor.ctl("start", *PROCESSES).stdout
        outcomes = {}
        for result in results:
            result.get(timeout=120)
            outcomes[result.id] = result.state
        lost = TASKS - list(outcomes.values()).count("SUCCESS")
        figures.update(
            {
                "in flight at stop": in_flight,
                "completed during warm shutdown": done_in_shutdown,
                "requeued, completed after restart": TASKS - done_in_shutdown,
                "lost": lost,
            }
        )
        assert lost == 0
        assert queue_depth(url, dlq_name("default"))[0] == 0, "nothing dead-lettered"
        data = Path(env["FLEET_VAR_DIR"]) / "data" / "processed"
        assert sorted(p.name for p in data.glob("9*.json")) == sorted(f"{9000 + n}.json" for n in range(TASKS))
