"""Wiring worker metrics into a worker, in the order prefork needs.

1. ``launch`` (by ``fleet worker``, before the Celery app is built): wipe this
   worker's metrics directory and point prometheus-client at it, before
   anything imports prometheus-client (it picks multiprocess mode on import).
2. ``worker_init`` (main process, before the pool forks): make the one
   :class:`~fleet.metrics.worker.WorkerMetrics` (every series at zero), connect
   its hooks, hand it to the app for the worker's Request, start the HTTP server.
3. Each pool child drops the inherited server socket; on exit it folds its
   counters into the archive. A timer in the main process keeps the heartbeat
   and retires the files of children that were killed.

``celery -A fleet worker`` gets the same at ``worker_init`` (step 1 done there).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps, signals
from celery.worker import state

from fleet.metrics import stamp
from fleet.pools import POOLS, PoolError, PoolSpec, metrics_port
from fleet.settings import MULTIPROC_ENV, Settings

logger = logging.getLogger("fleet.metrics")

TICK_SECONDS = 1.0
CUSTOM_POOL = "custom"


class MetricsSetupError(RuntimeError):
    """Worker metrics cannot be exported correctly (they were created before the directory was set)."""


@dataclass(frozen=True)
class Launch:
    directory: Path
    pool: str
    kind: str
    queues: tuple[str, ...]
    addr: str
    port: int | None


_launch: Launch | None = None
_exporter: Any = None


def node_directory(settings: Settings, node: str) -> Path:
    """The metrics directory of worker ``node``: one per worker, so workers never share files."""
    return settings.metrics_dir / node.replace("@", "_").replace("/", "_")


def prepare_directory(directory: Path) -> None:
    """Empty ``directory`` and select multiprocess mode for this process and its children.

    Runs before the worker's metrics exist (:class:`~fleet.metrics.worker.WorkerMetrics`
    refuses to be made without it). prometheus-client itself may be loaded already
    (``celery`` loads CLI plugins such as Flower that import it): multiprocess mode is
    selected for the metrics created from now on.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)  # read by prometheus_client on import, and by pool children
    from prometheus_client import values

    # prometheus-client asks the kernel for the pid on every write, to notice a fork: about 5% of
    # a pool child's time under short tasks. The pid cached at fork tells the same for less.
    values.ValueClass = values.MultiProcessValue(process_identifier=CachedPid())


class CachedPid:
    """``os.getpid()`` without the system call: refreshed in every forked child (billiard's pool
    children are forks), which is all prometheus-client needs to tell processes apart."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


def _port(settings: Settings, pool: str, index: int | None) -> int | None:
    if pool not in POOLS:
        return settings.metrics_port
    try:
        return metrics_port(settings.metrics_port, pool, index)
    except PoolError as exc:
        logger.error("metrics: %s; this worker runs without /metrics", exc)
        return None


def launch(settings: Settings, spec: PoolSpec, node: str, index: int | None) -> Launch:
    """Called by ``fleet worker`` first thing: the directory is set before any import."""
    global _launch
    directory = node_directory(settings, node)
    prepare_directory(directory)
    port = _port(settings, spec.name, index)
    _launch = Launch(directory, spec.name, spec.pool, spec.queues, settings.metrics_addr, port)
    return _launch


def _launch_from_worker(controller: Any, settings: Settings) -> Launch:
    """``celery -A fleet worker``: the pool is the one whose queues the worker consumes."""
    queues = tuple(controller.app.amqp.queues.consume_from or controller.app.amqp.queues)
    pool = next((spec.name for spec in POOLS.values() if set(spec.queues) == set(queues)), CUSTOM_POOL)
    directory = node_directory(settings, controller.hostname)
    prepare_directory(directory)
    kind = controller.pool_cls
    if not isinstance(kind, str):  # a class from celery.concurrency.<module>
        kind = {"thread": "threads"}.get(kind.__module__.rsplit(".", 1)[-1], kind.__module__.rsplit(".", 1)[-1])
    return Launch(directory, pool, kind, queues, settings.metrics_addr, settings.metrics_port)


def _version() -> str:
    try:
        return metadata.version("fleet")
    except metadata.PackageNotFoundError:
        return "unknown"


def on_worker_init(sender: Any = None, **_: Any) -> None:
    global _launch, _exporter
    from fleet.metrics.exporter import WorkerExporter, WorkerIdentity
    from fleet.metrics.labels import Labeler
    from fleet.metrics.worker import WorkerMetrics
    from fleet.ops.pause import open_pauses

    app, settings = sender.app, sender.app.fleet_settings
    names = [name for name in app.tasks if not name.startswith("celery.")]
    try:
        launched = _launch or _launch_from_worker(sender, settings)
        metrics = WorkerMetrics(
            launched.pool, launched.queues, names, Labeler(app.tasks), tally_runs=launched.kind == "threads"
        )
    except MetricsSetupError as exc:
        logger.error("metrics: %s; this worker runs without /metrics", exc)
        return
    _launch = launched
    metrics.connect()
    app.worker_metrics = metrics  # the worker's Request records what only the main process sees
    identity = WorkerIdentity(launched.pool, launched.kind, launched.queues, _version())
    _exporter = WorkerExporter(
        launched.directory,
        identity,
        sender,
        metrics,
        connect_broker=lambda: app.connection_for_read(transport_options={"read_timeout": 5, "write_timeout": 5}),
        paused=open_pauses(settings).paused,
    )
    if launched.port is not None:
        _exporter.serve(launched.addr, launched.port)


def on_child_init(**_: Any) -> None:
    if _exporter is not None:
        _exporter.in_child()


def on_child_exit(**_: Any) -> None:
    if _exporter is not None:
        _exporter.child_exiting()


class MetricsTimer(bootsteps.StartStopStep):
    """Runs the exporter's tick from the worker's own event loop: a blocked loop shows as a stale heartbeat."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None

    def start(self, w: Any) -> None:
        if _exporter is not None:
            self.tref = w.timer.call_repeatedly(TICK_SECONDS, self._tick)

    def _tick(self) -> None:
        try:
            _exporter.tick(shutting_down=lambda: bool(state.should_stop or state.should_terminate))
        except Exception:  # noqa: BLE001 - metrics upkeep must never stop the worker
            logger.exception("metrics: upkeep failed")

    def stop(self, w: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        if _exporter is not None:
            _exporter.close()


def connect(app: Celery) -> None:
    """Wire metrics into ``app``: the publish stamp everywhere, the rest only in workers."""
    stamp.connect()
    signals.worker_init.connect(on_worker_init, dispatch_uid="fleet.metrics.worker_init", weak=False)
    signals.worker_process_init.connect(on_child_init, dispatch_uid="fleet.metrics.child_init", weak=False)
    signals.worker_process_shutdown.connect(on_child_exit, dispatch_uid="fleet.metrics.child_exit", weak=False)
    app.steps["worker"].add(MetricsTimer)
