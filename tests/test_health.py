"""Worker health files: the heartbeat goes stale when the event loop is blocked, stays fresh
while the broker is down, and ``fleet health`` reads them without the Celery app or the broker.

The broker here is a disposable RabbitMQ node on other ports (never the shared one), so the
test can kill it and bring it back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.testing.ports import free_port
from fleet.testing.processes import FLEET, FleetProcess, start_worker
from fleet.worker.health import NodeFiles, check, health_dir

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class DisposableRabbit:
    """A throwaway RabbitMQ node of this module's own: own ports, data, cookie, no plugins."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        base.mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("")
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        self.env = {
            **os.environ,
            "HOME": str(base),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"fleet-health-{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, timeout: float = 60) -> DisposableRabbit:
        with (self.base / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [RABBITMQ_SERVER], env=self.env, cwd=self.base, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.poll() is None, (self.base / "server.log").read_text()[-2000:]
                time.sleep(0.3)
        raise AssertionError(f"disposable RabbitMQ did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """An outage: the whole node dies at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DisposableRabbit]:
    node = DisposableRabbit(tmp_path_factory.mktemp("rabbit")).start()
    yield node
    node.kill()


@pytest.fixture(scope="module")
def worker_env(rabbit: DisposableRabbit, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLEET_", "CELERY_"))}
    env.update(
        CELERY_BROKER_URL=rabbit.url,
        FLEET_VAR_DIR=str(tmp_path_factory.mktemp("health-var")),
        FLEET_TASK_MODULES="tests.support.loop_blocker",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str]) -> Iterator[FleetProcess]:
    """An email (threads) worker: its tasks run beside the event loop, so one can block it."""
    process = start_worker("email", worker_env, Path(worker_env["FLEET_VAR_DIR"]) / "log")
    yield process
    process.stop()


def probe(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run([FLEET, "health", *args], env=env, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr


def poll_probe(env: dict[str, str], args: tuple[str, ...], until_rc: int, timeout: float) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        rc, out = probe(env, *args)
        if rc == until_rc or time.monotonic() > deadline:
            return rc, out
        time.sleep(1)


def test_a_started_worker_is_live_and_ready(worker: FleetProcess, worker_env: dict[str, str]) -> None:
    assert probe(worker_env, "--liveness") == (0, "liveness: ok\n")
    rc, out = poll_probe(worker_env, ("--readiness",), until_rc=0, timeout=15)
    assert rc == 0, out


def test_heartbeat_goes_stale_while_the_event_loop_is_blocked(worker: FleetProcess, worker_env: dict[str, str]) -> None:
    stale = ("--liveness", "--max-age", "10")  # twice the heartbeat interval
    assert probe(worker_env, *stale)[0] == 0
    subprocess.run(
        [CELERY, "-A", "fleet", "call", "tests.block_event_loop", "--args", "[18]", "--queue", "email"],
        env=worker_env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    rc, out = poll_probe(worker_env, stale, until_rc=1, timeout=18)
    assert rc == 1 and "the worker's loop is stuck" in out, out
    assert worker.proc is not None and worker.proc.poll() is None, "the process itself is alive"
    rc, out = poll_probe(worker_env, stale, until_rc=0, timeout=40)
    assert rc == 0, f"heartbeat did not recover once the loop turned again: {out}"


def test_heartbeat_stays_fresh_while_the_broker_is_down(
    rabbit: DisposableRabbit, worker: FleetProcess, worker_env: dict[str, str]
) -> None:
    connects = worker.log().count("Connected to amqp://")
    rabbit.kill()
    try:
        worker.wait_for_log("Cannot connect to amqp://", timeout=30)
        deadline = time.monotonic() + 20  # twice the max age below
        while time.monotonic() < deadline:
            rc, out = probe(worker_env, "--liveness", "--max-age", "10")
            assert rc == 0, f"liveness failed during a broker outage (pods would crash-loop): {out}"
            time.sleep(2)
    finally:
        rabbit.start()
    deadline = time.monotonic() + 60
    while worker.log().count("Connected to amqp://") <= connects:
        assert time.monotonic() < deadline, "the worker did not reconnect"
        time.sleep(0.5)
    assert probe(worker_env, "--readiness")[0] == 0


def test_the_probe_needs_neither_the_app_nor_the_broker(tmp_path: Path) -> None:
    """With nothing listening on the broker's port, the probe still answers from the files alone."""
    files = NodeFiles.of(health_dir(tmp_path), "default-0@probe-host")
    files.heartbeat.parent.mkdir(parents=True)
    files.beat()
    files.mark_ready()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "CELERY_"))},
        "FLEET_VAR_DIR": str(tmp_path),
        "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}//",
    }
    code = (
        "import sys\n"
        "from fleet.cli import main\n"
        "try:\n"
        "    main(['health', '--readiness'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "loaded = sorted(m for m in sys.modules if m == 'app' or m.startswith(('fleet.celery_app', 'fleet.tasks')))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip().endswith("ok"), done.stdout + done.stderr


def test_stale_missing_and_unready_nodes_fail(tmp_path: Path) -> None:
    directory = health_dir(tmp_path)
    assert check(directory, readiness=False) == [f"no worker heartbeat under {directory}"]
    directory.mkdir()
    fresh, old = NodeFiles.of(directory, "email-0@h"), NodeFiles.of(directory, "email-1@h")
    fresh.beat()
    assert check(directory, readiness=False) == []
    assert check(directory, readiness=True) == ["email-0@h: not ready (starting or shutting down)"]
    fresh.mark_ready()
    assert check(directory, readiness=True) == []
    old.beat()
    os.utime(old.heartbeat, (time.time() - 100, time.time() - 100))
    assert check(directory, readiness=False, node="email-0@h") == []
    problems = check(directory, readiness=False, max_age=30)
    assert len(problems) == 1 and problems[0].startswith("email-1@h: heartbeat is 100s old"), problems
    assert check(directory, readiness=False, node="nobody@h") == [
        f"nobody@h: no heartbeat file {directory / 'nobody@h.heartbeat'}"
    ]
