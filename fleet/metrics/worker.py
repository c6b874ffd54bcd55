"""The worker's task metrics as one object, :class:`WorkerMetrics`, fed by hook methods.

Like a Dramatiq middleware: the metrics are made when the worker boots (its
metrics directory set, see :mod:`fleet.metrics.setup`), never at import, and
each hook records one event. Hooks run where Celery sends the signal:
``task_received``/``task_revoked``/``task_rejected``, the Request's time-limit and
lost-worker hooks and the pool's ``on_process_down`` in the worker's main process,
the run hooks (:mod:`fleet.worker.taskrun`) and ``task_retry``/``failure`` in the
pool child (or thread) running the task; with prefork each process writes its own file and the
exporter merges them.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from celery import signals, states
from prometheus_client import Counter, Gauge, Histogram

from fleet.metrics.labels import OTHER, Labeler
from fleet.metrics.setup import MetricsSetupError
from fleet.metrics.stamp import PUBLISHED_AT_HEADER
from fleet.settings import MULTIPROC_ENV
from fleet.worker import taskrun
from fleet.worker.protocol import REASONS as REJECT_REASONS

TASK = ("queue", "task")
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
TIME_LIMITS = ("soft", "hard")
RESTART_REASONS = ("recycled", "lost")

COUNTED = "fleet_failure_counted"  # marks a request context whose failure is counted
MAX_BUNDLES = 1024  # (routing key, task name) pairs remembered; the labels themselves stay bounded


class _TaskSeries(NamedTuple):
    """The series one task touches on every run, bound to its (queue, task) labels."""

    received: Any
    started: Any
    in_progress: Any
    queue_wait: Any
    succeeded: Any
    runtime: Any


class _Observed:
    """A histogram's observations not yet written: a count per bucket and their sum.

    Written with the histogram's own bucket and sum values (prometheus-client's ``_buckets``,
    ``_sum`` and ``_upper_bounds``, pinned in pyproject.toml; tests/test_metrics_units.py
    compares the result with ``observe``), one file write per bucket touched instead of two
    per observation.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, histogram: Any) -> None:
        self.bounds = histogram._upper_bounds
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound >= value, as observe()
        self.total += value

    def write(self, histogram: Any) -> None:
        if any(self.counts):
            histogram._sum.inc(self.total)
            for bucket, count in zip(histogram._buckets, self.counts, strict=True):
                if count:
                    bucket.inc(count)


class _Tally:
    """What the runs of one (queue, task) did since the last flush, in a threaded worker."""

    __slots__ = ("in_progress", "queue_wait", "runtime", "started", "succeeded")

    def __init__(self, series: _TaskSeries) -> None:
        self.started = self.succeeded = self.in_progress = 0
        self.queue_wait = _Observed(series.queue_wait)
        self.runtime = _Observed(series.runtime)

    def write(self, series: _TaskSeries) -> None:
        for value, count in ((series.started, self.started), (series.succeeded, self.succeeded)):
            if count:
                value.inc(count)
        if self.in_progress:
            series.in_progress.inc(self.in_progress)
        self.queue_wait.write(series.queue_wait)
        self.runtime.write(series.runtime)


class WorkerMetrics:
    """Every metric the worker records and the hooks that record them."""

    def __init__(
        self, pool: str, queues: Iterable[str], tasks: Iterable[str], labeler: Labeler, tally_runs: bool = False
    ) -> None:
        """Define the metrics and create every queue x task series at zero (rates and absence
        alerts work from the start). Prometheus-client picks a metric's storage when the metric
        is made, so the worker's metrics directory must be set by then.

        ``tally_runs``: the runs are counted in memory and written by :meth:`flush` (the
        exporter's tick and every scrape), for a worker whose tasks run in threads of the
        process that flushes; a prefork child has no tick, and writes each run as it ends.
        """
        if not os.environ.get(MULTIPROC_ENV):
            raise MetricsSetupError(
                "the worker's metrics would be created before its metrics directory was set; "
                "their values would not be shared with pool children"
            )
        self.pool = pool
        self.queues = tuple(queues)
        self.labeler = labeler
        self._started: dict[str, float] = {}  # task id -> monotonic start, in the process running it
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}  # (metric, labels) -> labelled series
        self._bundles: dict[tuple[Any, Any], _TaskSeries] = {}  # (routing key, task name) -> its series
        self._received_counts: dict[tuple[Any, Any], int] = {}  # (routing key, task name) -> received
        self._received_written: dict[tuple[Any, Any], int] = {}  # ... of which written to the file
        self._flush_lock = threading.Lock()
        self.tally_runs = tally_runs
        self._tallies: dict[_TaskSeries, _Tally] = {}  # runs not yet written (tally_runs)
        self._tally_lock = threading.Lock()

        def counter(name: str, doc: str, labels: tuple[str, ...] = TASK) -> Counter:
            return Counter(name, doc, labels, registry=None)  # exported from the files, not a registry

        self.received = counter("fleet_tasks_received", "Task messages received by the worker (run now or prefetched).")
        self.started = counter("fleet_tasks_started", "Task executions started (each retry is a new execution).")
        self.succeeded = counter("fleet_tasks_succeeded", "Task executions that succeeded.")
        self.failed = counter(
            "fleet_tasks_failed",
            "Task executions that failed (dead-lettered to <queue>.dlq), by exception class.",
            (*TASK, "exception"),
        )
        self.retried = counter("fleet_tasks_retried", "Task executions that ended in a retry.")
        self.rejected = counter(
            "fleet_tasks_rejected", "Messages refused without running (malformed, unknown task, undecodable)."
        )
        self.messages_rejected = counter(
            "fleet_messages_rejected",
            "Messages dead-lettered without running, by reason (malformed, undecodable, unknown task...).",
            ("queue", "reason"),
        )
        self.revoked = counter("fleet_tasks_revoked", "Tasks revoked (cancelled, expired or terminated).")
        self.worker_lost = counter("fleet_tasks_worker_lost", "Tasks whose pool process died under them.")
        self.time_limit_hits = counter(
            "fleet_task_time_limit_hits", "Soft and hard time limits reached.", (*TASK, "limit")
        )
        self.runtime = Histogram(
            "fleet_task_runtime_seconds",
            "Task execution time, successes, failures and retries alike.",
            TASK,
            buckets=RUNTIME_BUCKETS,
            registry=None,
        )
        self.queue_wait = Histogram(
            "fleet_task_queue_wait_seconds",
            "Publish to start of execution (messages with an ETA or countdown excluded).",
            TASK,
            buckets=WAIT_BUCKETS,
            registry=None,
        )
        self.in_progress = Gauge(
            "fleet_tasks_in_progress", "Tasks executing now.", TASK, multiprocess_mode="livesum", registry=None
        )  # a killed child's share vanishes with it
        self.child_restarts = counter(
            "fleet_worker_child_restarts",
            "Pool processes replaced: recycled (max tasks/memory) or lost (killed, crashed).",
            ("pool", "reason"),
        )
        self._per_task_hot = (
            self.received,
            self.started,
            self.in_progress,
            self.queue_wait,
            self.succeeded,
            self.runtime,
        )  # _TaskSeries' fields, in order
        self._precreate(tuple(tasks))

    def _precreate(self, tasks: tuple[str, ...]) -> None:
        per_task = (
            self.received,
            self.started,
            self.succeeded,
            self.retried,
            self.rejected,
            self.revoked,
            self.worker_lost,
            self.runtime,
            self.queue_wait,
        )
        for queue in self.queues:
            for task in (*tasks, OTHER):
                for metric in per_task:
                    metric.labels(queue, task)
                self.failed.labels(queue, task, "")  # an empty label is no label: the zero series of the sum
                self.in_progress.labels(queue, task).set(0)
                for limit in TIME_LIMITS:
                    self.time_limit_hits.labels(queue, task, limit)
            for reason in REJECT_REASONS:
                self.messages_rejected.labels(queue, reason)
        for reason in RESTART_REASONS:
            self.child_restarts.labels(self.pool, reason)

    def _of(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """``metric.labels(*labels)``, remembered: label sets are few (queues x tasks), so the lookup
        is worth sparing (forked children reuse it safely: prometheus-client reopens its files on a
        pid change)."""
        key = (id(metric), labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        return series

    def _task_series(self, request: Any, name: Any) -> _TaskSeries:
        """The per-task series of a delivery, bound once per (routing key, task name) seen: the
        labelling and five ``labels()`` lookups were most of what metrics cost a task."""
        delivery_info = getattr(request, "delivery_info", None)
        key = ((delivery_info or {}).get("routing_key"), name)
        try:
            bundle = self._bundles.get(key)
        except TypeError:  # a malformed message's name may be unhashable
            bundle, key = None, None
        if bundle is None:
            labels = self.labeler.for_request(request, name)
            bundle = _TaskSeries(*(self._of(metric, labels) for metric in self._per_task_hot))
            if key is not None and len(self._bundles) < MAX_BUNDLES:  # unknown names would mint keys
                self._bundles[key] = bundle
        return bundle

    def queue_of(self, request: Any) -> str:
        return self.labeler.queue(getattr(request, "delivery_info", None))

    def _task_labels(self, task: Any) -> tuple[str, str]:
        return self.labeler.for_request(task.request, task.name)

    # Celery signals

    def on_received(self, request: Any = None, **_: Any) -> None:
        """Counted in memory here, written to the file by :meth:`flush_received` (the exporter's
        tick, once a second): a file write per message in the consumer's thread cost about 6% of a
        no-op's worker CPU (bench.ab), the whole of this hook."""
        key = ((getattr(request, "delivery_info", None) or {}).get("routing_key"), request.name)
        counts = self._received_counts
        try:
            counts[key] = counts.get(key, 0) + 1
        except TypeError:  # a malformed message's name may be unhashable
            self._task_series(request, request.name).received.inc()

    def flush(self) -> None:
        """Write what was counted in memory since the last flush: messages received, and the
        runs' tallies (``tally_runs``)."""
        self.flush_received()
        if self.tally_runs:
            with self._tally_lock:
                tallies, self._tallies = self._tallies, {}
            for series, tally in tallies.items():
                tally.write(series)

    def flush_received(self) -> None:
        """Write what :meth:`on_received` counted since the last flush. Only ever adds the
        difference from what was written, so it may run in another thread than the counting."""
        for key, count in list(self._received_counts.items()):
            delta = count - self._received_written.get(key, 0)
            if delta:
                self._received_written[key] = count
                routing_key, name = key
                self._of(
                    self.received, (self.labeler.queue({"routing_key": routing_key}), self.labeler.task(name))
                ).inc(delta)

    # The run itself, in the thread running it (fleet.worker.taskrun)

    def _tally(self, series: _TaskSeries) -> _Tally:
        """The series' tally; the caller holds ``_tally_lock``."""
        tally = self._tallies.get(series)
        if tally is None:
            tally = self._tallies[series] = _Tally(series)
        return tally

    def run_started(self, task: Any, request: Any, task_id: str) -> None:
        series = self._task_series(request, task.name)
        self._started[task_id] = time.monotonic()
        published_at = getattr(request, PUBLISHED_AT_HEADER, None)
        wait = (
            max(0.0, time.time() - published_at) if isinstance(published_at, int | float) and not request.eta else None
        )
        if self.tally_runs:
            with self._tally_lock:
                tally = self._tally(series)
                tally.started += 1
                tally.in_progress += 1
                if wait is not None:
                    tally.queue_wait.add(wait)
            return
        series.started.inc()
        series.in_progress.inc()
        if wait is not None:
            series.queue_wait.observe(wait)

    def run_ended(self, task: Any, request: Any, task_id: str, state: str | None) -> None:
        """The run's end: in progress down, runtime observed, and a success counted here rather
        than from ``task_success`` (Celery sends that just before, for exactly the runs that end
        in SUCCESS)."""
        started = self._started.pop(task_id, None)
        if started is None and state != states.SUCCESS:
            return
        series = self._task_series(request, task.name)
        succeeded = state == states.SUCCESS
        # state None: the run was cut short (a hard time limit, recorded by the main process)
        runtime = time.monotonic() - started if started is not None and state is not None else None
        if self.tally_runs:
            with self._tally_lock:
                tally = self._tally(series)
                tally.succeeded += succeeded
                tally.in_progress -= started is not None
                if runtime is not None:
                    tally.runtime.add(runtime)
            return
        if succeeded:
            series.succeeded.inc()
        if started is not None:
            series.in_progress.dec()
        if runtime is not None:
            series.runtime.observe(runtime)

    def on_retry(self, sender: Any = None, **_: Any) -> None:
        self.retried.labels(*self._task_labels(sender)).inc()

    def on_failure(self, sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        request = sender.request
        if getattr(request, COUNTED, False):  # Celery reports a hard time limit twice when it dead-letters it
            return
        self.failed.labels(*self._task_labels(sender), self.labeler.exception(exception)).inc()
        if getattr(request, "id", None):  # never mark the task's shared default context
            setattr(request, COUNTED, True)

    def on_rejected(self, message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
        headers = getattr(message, "headers", None) or {}
        queue = self.labeler.queue(getattr(message, "delivery_info", None))
        self.rejected.labels(queue, self.labeler.task(headers.get("task"))).inc()
        self.messages_rejected.labels(queue, getattr(exc, "reason", "error")).inc()

    def on_revoked(self, request: Any = None, **_: Any) -> None:
        self.revoked.labels(*self.labeler.for_request(request, getattr(request, "name", None))).inc()

    # The worker's Request (fleet.worker.request), in the main process

    def on_time_limit(self, request: Any, soft: bool, ran_for: float) -> None:
        """A time limit fired; a hard one killed the child, so its runtime is recorded here."""
        labels = self.labeler.for_request(request, request.name)
        self.time_limit_hits.labels(*labels, "soft" if soft else "hard").inc()
        if not soft:
            self.runtime.labels(*labels).observe(ran_for)
            self.flush()  # a threaded worker exits next: what it tallied is written first

    def on_worker_lost(self, request: Any) -> None:
        self.worker_lost.labels(*self.labeler.for_request(request, request.name)).inc()

    # The pool

    def on_child_start(self) -> None:
        """In a freshly forked pool child: create this process's files."""
        self.in_progress.labels(self.queues[0], OTHER).inc(0)

    def watch_children(self, pool: Any, shutting_down: Callable[[], bool]) -> None:
        """Count each prefork child that exits while the worker runs, by why it exited.

        billiard calls its pool's ``on_process_down`` for every child it reaps, in
        this process; Celery sets that hook when the pool joins the event loop (again
        after a broker reconnect), so it is wrapped again whenever it was replaced.
        """
        down = getattr(pool, "on_process_down", None)
        if down is None or getattr(down, "fleet_counted", False):
            return
        from billiard.pool import EX_RECYCLE

        def counted(process: Any) -> Any:
            if not shutting_down():
                reason = "recycled" if process.exitcode == EX_RECYCLE else "lost"
                self.child_restarts.labels(self.pool, reason).inc()
            return down(process)

        counted.fleet_counted = True  # type: ignore[attr-defined]
        pool.on_process_down = counted

    def connect(self) -> None:
        """Connect the signal hooks and the run hooks (in the worker's main process, before the pool forks)."""
        taskrun.register("metrics", self.run_started, self.run_ended)
        for signal, receiver in (
            (signals.task_received, self.on_received),
            (signals.task_retry, self.on_retry),
            (signals.task_failure, self.on_failure),
            (signals.task_rejected, self.on_rejected),
            (signals.task_revoked, self.on_revoked),
        ):
            signal.connect(receiver, dispatch_uid=f"fleet.metrics.{receiver.__name__}", weak=False)
