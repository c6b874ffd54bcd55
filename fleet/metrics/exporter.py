"""The worker's ``/metrics`` endpoint, served by its main process only.

One registry merges three sources at scrape time: the multiprocess files of
every process of this worker (archives of exited children included), the main
process's view of the worker (concurrency, active and reserved requests,
heartbeat), and the broker's queue depths.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.worker import state
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from fleet.metrics import archive
from fleet.metrics.queues import QueueCollector
from fleet.metrics.worker import WorkerMetrics
from fleet.worker.held import snapshot

logger = logging.getLogger("fleet.metrics")


@dataclass(frozen=True)
class WorkerIdentity:
    pool: str
    kind: str
    queues: tuple[str, ...]
    version: str


class WorkerCollector:
    """What the main process knows of the worker, read at scrape time."""

    def __init__(self, identity: WorkerIdentity, controller: Any, metrics: WorkerMetrics) -> None:
        self.identity = identity
        self.controller = controller
        self.metrics = metrics
        self.last_heartbeat = time.time()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool, queues = self.identity.pool, self.identity.queues
        active = snapshot(state.active_requests)
        running = set(active)
        reserved = [r for r in snapshot(state.reserved_requests) if r not in running]

        def per_queue(name: str, doc: str, requests: list[Any]) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["pool", "queue"])
            for queue in queues:
                family.add_metric([pool, queue], sum(1 for r in requests if self.metrics.queue_of(r) == queue))
            return family

        def single(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["pool"])
            family.add_metric([pool], value)
            return family

        yield single("fleet_worker_concurrency", "Pool processes or threads.", self.controller.concurrency)
        yield per_queue("fleet_worker_active_tasks", "Tasks executing in the pool.", active)
        yield per_queue("fleet_worker_reserved_tasks", "Tasks prefetched, waiting for a free slot.", reserved)
        now = time.time()
        starts = [r.time_start for r in active if r.time_start]
        yield single(
            "fleet_worker_oldest_task_age_seconds",
            "Age of the longest-running task (0 when idle).",
            max((now - start for start in starts), default=0.0),
        )
        yield single(
            "fleet_worker_last_heartbeat_timestamp_seconds",
            "When the worker's event loop last ran its metrics timer (Unix time).",
            self.last_heartbeat,
        )
        limits = GaugeMetricFamily(
            "fleet_worker_task_time_limit_seconds", "The pool's task time limits.", labels=["pool", "limit"]
        )
        for limit, value in (("soft", self.controller.soft_time_limit), ("hard", self.controller.time_limit)):
            if value:
                limits.add_metric([pool, limit], value)
        yield limits
        info = GaugeMetricFamily(
            "fleet_worker_info",
            "The worker: fleet version, pool, pool kind, queues.",
            labels=["pool", "kind", "queues", "version"],
        )
        info.add_metric([pool, self.identity.kind, ",".join(queues), self.identity.version], 1)
        yield info


class Flush:
    """First in the registry: a scrape sees every message received and every run so far
    (counted in memory, :meth:`WorkerMetrics.flush`)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        self.metrics.flush()
        return iter(())


class WorkerExporter:
    """Serves ``/metrics`` for one worker and keeps its metrics directory bounded."""

    def __init__(
        self,
        directory: Path,
        identity: WorkerIdentity,
        controller: Any,
        metrics: WorkerMetrics,
        connect_broker: Callable[[], Any],
        paused: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.directory = directory
        self.identity = identity
        self.controller = controller
        self.metrics = metrics
        self.worker = WorkerCollector(identity, controller, metrics)
        self.queues = QueueCollector(connect_broker, paused)
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in (
            Flush(metrics),
            archive.ArchivingMultiProcessCollector(directory),
            self.worker,
            self.queues,
        ):
            self.registry.register(collector)
        self.server: Any = None

    def serve(self, addr: str, port: int) -> bool:
        """Start the HTTP server thread; a taken port is logged, never fatal (the target shows down)."""
        try:
            self.server, _ = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            logger.error("metrics: cannot serve on %s:%s (%s); this worker runs without /metrics", addr, port, exc)
            return False
        logger.info("metrics: serving /metrics on %s:%s from %s", addr, port, self.directory)
        return True

    def in_child(self) -> None:
        """In a freshly forked pool child: drop the inherited listening socket, create this process's files."""
        if self.server is not None:
            self.server.socket.close()
        self.metrics.on_child_start()

    def child_exiting(self) -> None:
        """In a pool child about to exit: fold its counters into the archives."""
        archive.retire(self.directory, os.getpid())

    def tick(self, shutting_down: Callable[[], bool]) -> None:
        """Main process, from the worker's event loop: heartbeat, what was counted in memory written,
        retire killed children's files, and keep the pool's exiting children counted."""
        self.worker.last_heartbeat = time.time()
        self.metrics.flush()
        archive.sweep(self.directory, keep={os.getpid()})
        pool = getattr(getattr(self.controller, "pool", None), "_pool", None)  # prefork only
        if pool is not None:
            self.metrics.watch_children(pool, shutting_down)

    def close(self) -> None:
        self.metrics.flush()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.queues.close()
