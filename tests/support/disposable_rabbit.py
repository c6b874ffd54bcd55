"""A private RabbitMQ node for tests that break the broker.

The shared node on 5672 is never touched: a :class:`DisposableRabbit` runs its
own ``rabbitmq-server`` under its own node name, AMQP and distribution ports,
data, log and config directories, listening on 127.0.0.1 only. It can be
stopped, killed with SIGKILL, restarted on the same data (durable queues and
persistent messages survive), pushed into memory or disk alarms, and is removed
without a trace by :meth:`remove`.

Debian's wrapper runs the node as the ``rabbitmq`` user (``su rabbitmq``, which
keeps the ``RABBITMQ_*`` environment), so every directory is owned by that user
and the CLI shares its Erlang cookie.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from fleet.testing.ports import free_port

RABBITMQ_USER = "rabbitmq"


class RabbitError(RuntimeError):
    """The disposable node did not do what was asked; the message carries its log tail."""


class DisposableRabbit:
    """One private RabbitMQ node. Use as a context manager or call start/remove.

    ``consumer_timeout`` (seconds), ``memory_high_watermark`` (fraction of RAM)
    and ``disk_free_limit`` (bytes) go into its rabbitmq.conf; the alarms can
    also be raised and cleared at run time with :meth:`raise_memory_alarm` and
    :meth:`raise_disk_alarm`.
    """

    def __init__(
        self,
        consumer_timeout: float | None = None,
        memory_high_watermark: float | None = None,
        disk_free_limit: int | None = None,
        startup_timeout: float = 90,
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.node = f"fleet-test-{suffix}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.consumer_timeout = consumer_timeout
        self.memory_high_watermark = memory_high_watermark
        self.disk_free_limit = disk_free_limit
        self.startup_timeout = startup_timeout
        self.base = Path(tempfile.mkdtemp(prefix=f"fleet-rabbit-{suffix}-"))
        self.mnesia_base = self.base / "mnesia"
        self.log_base = self.base / "log"
        self.config_file = self.base / "rabbitmq.conf"
        self.pid_file = self.base / "node.pid"

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """The broker URL of the default vhost (guest is allowed on loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether the AMQP port accepts TCP connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout):
                return True
        except OSError:
            return False

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> DisposableRabbit:
        """Start the node (first time or again on the same data) and wait until it serves."""
        self._prepare()
        self._run(["rabbitmq-server", "-detached"], timeout=60)
        try:
            # -detached returns before the node registers; ``wait`` waits for its pid file, then the app.
            self.ctl(
                "wait",
                str(self.pid_file),
                "--timeout",
                str(int(self.startup_timeout)),
                timeout=self.startup_timeout + 30,
            )
            self.ctl("await_startup", "--timeout", str(int(self.startup_timeout)), timeout=self.startup_timeout + 30)
        except RabbitError as exc:
            raise RabbitError(f"{exc}\n--- node log ---\n{self.log_tail()}") from None
        deadline = time.monotonic() + 30
        while not self.answers():
            if time.monotonic() > deadline:
                raise RabbitError(f"{self.node} started but port {self.port} does not answer\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Stop the node gracefully and wait until its process has exited."""
        if self.pid() is None:
            return
        self.ctl("stop", str(self.pid_file), timeout=120)
        self._wait_gone()

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM, as a crash or an OOM kill would."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._wait_gone()

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop (or kill) the node and delete every file it had."""
        try:
            self.stop()
        except (RabbitError, subprocess.TimeoutExpired):
            self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> DisposableRabbit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- alarms and limits -------------------------------------------------------

    def raise_memory_alarm(self) -> None:
        """Set the memory watermark so low that the alarm fires and publishers are blocked."""
        self.ctl("set_vm_memory_high_watermark", "0.000001")

    def clear_memory_alarm(self, watermark: float = 0.4) -> None:
        self.ctl("set_vm_memory_high_watermark", str(watermark))

    def raise_disk_alarm(self) -> None:
        """Demand more free disk than any machine has, so the disk alarm fires."""
        self.ctl("set_disk_free_limit", "100000GB")

    def clear_disk_alarm(self, limit: str = "50MB") -> None:
        self.ctl("set_disk_free_limit", limit)

    # -- plumbing ----------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -n <node> ...`` against this node only."""
        return self._run(["rabbitmqctl", "-q", "-n", self.node, *args], timeout=timeout)

    def pid(self) -> int | None:
        """The node's OS pid, if it is running."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def log_tail(self, chars: int = 4000) -> str:
        texts = [path.read_text(errors="replace") for path in sorted(self.log_base.glob("*.log"))]
        return "\n".join(texts)[-chars:]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.mnesia_base),
            RABBITMQ_LOG_BASE=str(self.log_base),
            RABBITMQ_CONFIG_FILE=str(self.config_file),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _config(self) -> str:
        lines = [
            f"listeners.tcp.local = 127.0.0.1:{self.port}",
            "loopback_users.guest = true",
            "log.file.level = info",
            "log.console = false",
        ]
        if self.consumer_timeout is not None:
            lines.append(f"consumer_timeout = {int(self.consumer_timeout * 1000)}")
        if self.memory_high_watermark is not None:
            lines.append(f"vm_memory_high_watermark.relative = {self.memory_high_watermark}")
        if self.disk_free_limit is not None:
            lines.append(f"disk_free_limit.absolute = {self.disk_free_limit}")
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        for directory in (self.mnesia_base, self.log_base):
            directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._config())
        (self.base / "enabled_plugins").write_text("[].\n")
        user = pwd.getpwnam(RABBITMQ_USER)
        for path in (self.base, *self.base.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, argv: list[str], timeout: float) -> str:
        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RabbitError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    def _wait_gone(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.pid() is not None or self.answers(timeout=0.2):
            if time.monotonic() > deadline:
                raise RabbitError(f"{self.node} still running {timeout}s after stop/kill")
            time.sleep(0.1)
