"""Worker liveness and readiness as files that a probe can read without the broker.

A heartbeat file is touched from the worker's event loop while the consumer is connected, so a
wedged loop goes stale. While the consumer waits for the broker, a side thread keeps it fresh
instead: restarting a worker does not bring a broker back, so an outage must not crash-loop pods.
A ready file exists from ``worker_ready`` until the warm shutdown begins.

``fleet health --liveness/--readiness`` only reads these files (see :func:`check`); it never
imports the Celery app or talks to the broker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import bootsteps, signals

#: how often the heartbeat file is touched (seconds)
HEARTBEAT_INTERVAL = 5.0
#: a heartbeat older than this means the worker's loop is stuck (seconds)
DEFAULT_MAX_AGE = 30.0

_HEARTBEAT, _READY = ".heartbeat", ".ready"


def health_dir(var_dir: Path) -> Path:
    """Where the health files of every worker node sharing ``var_dir`` live."""
    return var_dir / "health"


@dataclass(frozen=True)
class NodeFiles:
    """The heartbeat and ready files of one Celery node (``<pool>[-<index>]@<host>``)."""

    heartbeat: Path
    ready: Path

    @classmethod
    def of(cls, directory: Path, node: str) -> NodeFiles:
        return cls(directory / f"{node}{_HEARTBEAT}", directory / f"{node}{_READY}")

    def beat(self) -> None:
        self.heartbeat.touch()

    def mark_ready(self) -> None:
        self.ready.touch()

    def unready(self) -> None:
        self.ready.unlink(missing_ok=True)

    def remove(self) -> None:
        self.unready()
        self.heartbeat.unlink(missing_ok=True)


def check(directory: Path, readiness: bool, node: str | None = None, max_age: float = DEFAULT_MAX_AGE) -> list[str]:
    """The problems that make the probe fail (empty: healthy).

    Without ``node``, every node with a heartbeat under ``directory`` must pass (a pod runs one).
    Liveness needs a fresh heartbeat; readiness needs that and the ready file.
    """
    nodes = [node] if node else sorted(p.name.removesuffix(_HEARTBEAT) for p in directory.glob(f"*{_HEARTBEAT}"))
    if not nodes:
        return [f"no worker heartbeat under {directory}"]
    problems = []
    now = time.time()
    for name in nodes:
        files = NodeFiles.of(directory, name)
        try:
            age = now - files.heartbeat.stat().st_mtime
        except FileNotFoundError:
            problems.append(f"{name}: no heartbeat file {files.heartbeat}")
            continue
        if age > max_age:
            problems.append(f"{name}: heartbeat is {age:.0f}s old (limit {max_age:g}s): the worker's loop is stuck")
        if readiness and not files.ready.exists():
            problems.append(f"{name}: not ready (starting or shutting down)")
    return problems


def live_nodes(directory: Path, max_age: float = DEFAULT_MAX_AGE) -> list[str]:
    """The nodes whose heartbeat under ``directory`` is fresh: workers running on this machine."""
    now = time.time()
    found = []
    for path in directory.glob(f"*{_HEARTBEAT}"):
        try:
            if now - path.stat().st_mtime <= max_age:
                found.append(path.name.removesuffix(_HEARTBEAT))
        except FileNotFoundError:  # the worker stopped while we looked
            continue
    return sorted(found)


def expected_replies(var_dir: Path, consumers: int) -> int | None:
    """How many workers should answer a broadcast, so an ``inspect(limit=...)`` stops once all did.

    The larger of the fresh heartbeats under ``var_dir`` (local workers) and ``consumers`` (the
    work queues' consumer count, which also sees workers on other machines). An overestimate
    only means waiting for the timeout, as without a limit; None when nothing says a worker runs.
    """
    return max(len(live_nodes(health_dir(var_dir))), consumers) or None


class Heartbeat(bootsteps.StartStopStep):
    """Consumer bootstep keeping this node's health files (see the module docstring)."""

    requires = ("celery.worker.consumer.connection:Connection",)
    label = "Heartbeat"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        directory = health_dir(c.app.fleet_settings.var_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.node: str = c.hostname
        self.files = NodeFiles.of(directory, self.node)
        self.files.unready()  # left over from a previous run of this node
        self.files.beat()
        self._loop_beats = threading.Event()  # set while the event loop touches the file
        self._done = threading.Event()
        self._timer_entry: Any = None
        uid = f"fleet.worker.health:{self.node}"
        signals.worker_ready.connect(self._on_ready, weak=False, dispatch_uid=uid)
        signals.worker_shutting_down.connect(self._on_shutting_down, weak=False, dispatch_uid=uid)
        threading.Thread(target=self._beat_while_disconnected, name="fleet-heartbeat", daemon=True).start()

    def start(self, c: Any) -> None:
        """Connected: from now on the event loop itself proves it is alive."""
        self.files.beat()
        self._timer_entry = c.timer.call_repeatedly(HEARTBEAT_INTERVAL, self.files.beat)
        self._loop_beats.set()

    def stop(self, c: Any) -> None:
        """Connection lost (or stopping): the side thread takes over until reconnected."""
        self._loop_beats.clear()
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        self._done.set()
        self.files.remove()

    def _beat_while_disconnected(self) -> None:
        while not self._done.wait(HEARTBEAT_INTERVAL):
            if not self._loop_beats.is_set():
                self.files.beat()

    def _on_ready(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "hostname", None) == self.node:
            self.files.mark_ready()

    def _on_shutting_down(self, **_: Any) -> None:
        self.files.unready()
