"""The worker's task metrics and the Celery signal receivers that record them.

Imported only once the metrics directory is set (see :mod:`fleet.metrics.setup`).
Receivers run where Celery sends the signal: ``task_received``/``task_revoked``
and ``task_rejected`` in the worker's main process, ``task_prerun``/``postrun``/
``success``/``retry``/``failure`` in the pool child (or thread) running the task;
with prefork each process writes its own file and the exporter merges them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from celery import signals
from prometheus_client import Counter, Gauge, Histogram

from fleet.metrics.labels import OTHER, Labeler
from fleet.metrics.stamp import PUBLISHED_AT_HEADER
from fleet.worker.protocol import REASONS as REJECT_REASONS

TASK = ("queue", "task")
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
TIME_LIMITS = ("soft", "hard")
RESTART_REASONS = ("recycled", "lost")

RECEIVED = Counter("fleet_tasks_received", "Task messages received by the worker (run now or prefetched).", TASK)
STARTED = Counter("fleet_tasks_started", "Task executions started (each retry is a new execution).", TASK)
SUCCEEDED = Counter("fleet_tasks_succeeded", "Task executions that succeeded.", TASK)
FAILED = Counter(
    "fleet_tasks_failed",
    "Task executions that failed (dead-lettered to <queue>.dlq), by exception class.",
    (*TASK, "exception"),
)
RETRIED = Counter("fleet_tasks_retried", "Task executions that ended in a retry.", TASK)
REJECTED = Counter(
    "fleet_tasks_rejected", "Messages refused without running (malformed, unknown task, undecodable).", TASK
)
MESSAGES_REJECTED = Counter(
    "fleet_messages_rejected",
    "Messages dead-lettered without running, by reason (malformed, undecodable, unknown task...).",
    ("queue", "reason"),
)
REVOKED = Counter("fleet_tasks_revoked", "Tasks revoked (cancelled, expired or terminated).", TASK)
WORKER_LOST = Counter("fleet_tasks_worker_lost", "Tasks whose pool process died under them.", TASK)
TIME_LIMIT_HITS = Counter("fleet_task_time_limit_hits", "Soft and hard time limits reached.", (*TASK, "limit"))
RUNTIME = Histogram(
    "fleet_task_runtime_seconds",
    "Task execution time, successes, failures and retries alike.",
    TASK,
    buckets=RUNTIME_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "fleet_task_queue_wait_seconds",
    "Publish to start of execution (messages with an ETA or countdown excluded).",
    TASK,
    buckets=WAIT_BUCKETS,
)
IN_PROGRESS = Gauge(
    "fleet_tasks_in_progress", "Tasks executing now.", TASK, multiprocess_mode="livesum"
)  # a killed child's share vanishes with it
CHILD_RESTARTS = Counter(
    "fleet_worker_child_restarts",
    "Pool processes replaced: recycled (max tasks/memory) or lost (killed, crashed).",
    ("pool", "reason"),
)

COUNTED = "fleet_failure_counted"  # marks a request context whose failure is counted

_labeler = Labeler(())
_started: dict[str, float] = {}  # task id -> monotonic start, in the process running it
_series: dict[tuple[int, tuple[str, ...]], Any] = {}  # (metric, labels) -> labelled series


def _of(metric: Any, labels: tuple[str, ...]) -> Any:
    """``metric.labels(*labels)``, remembered: label sets are few (queues x tasks) and every
    task touches six series, so the lookup is worth sparing (forked children reuse it safely:
    prometheus-client reopens its files on a pid change)."""
    key = (id(metric), labels)
    series = _series.get(key)
    if series is None:
        series = _series[key] = metric.labels(*labels)
    return series


def precreate(pool: str, queues: Iterable[str], tasks: Iterable[str], labeler: Labeler) -> None:
    """Create every queue x task series at zero, so rates and absence alerts work from the start."""
    global _labeler
    _labeler = labeler
    for queue in queues:
        for task in (*tasks, OTHER):
            for metric in (RECEIVED, STARTED, SUCCEEDED, RETRIED, REJECTED, REVOKED, WORKER_LOST, RUNTIME, QUEUE_WAIT):
                metric.labels(queue, task)
            FAILED.labels(queue, task, "")  # an empty label is no label: the zero series of the sum
            IN_PROGRESS.labels(queue, task).set(0)
            for limit in TIME_LIMITS:
                TIME_LIMIT_HITS.labels(queue, task, limit)
        for reason in REJECT_REASONS:
            MESSAGES_REJECTED.labels(queue, reason)
    for reason in RESTART_REASONS:
        CHILD_RESTARTS.labels(pool, reason)


def queue_of(request: Any) -> str:
    return _labeler.queue(getattr(request, "delivery_info", None))


def _task_labels(task: Any) -> tuple[str, str]:
    return _labeler.for_request(task.request, task.name)


def on_received(request: Any = None, **_: Any) -> None:
    _of(RECEIVED, _labeler.for_request(request, request.name)).inc()


def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    labels = _task_labels(task)
    _of(STARTED, labels).inc()
    _of(IN_PROGRESS, labels).inc()
    _started[task_id] = time.monotonic()
    published_at = getattr(task.request, PUBLISHED_AT_HEADER, None)
    if isinstance(published_at, int | float) and not task.request.eta:
        _of(QUEUE_WAIT, labels).observe(max(0.0, time.time() - published_at))


def on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    labels = _task_labels(task)
    started = _started.pop(task_id, None)
    if started is not None:
        _of(IN_PROGRESS, labels).dec()
        if state is not None:  # None: the run was cut short (a hard time limit, recorded by the main process)
            _of(RUNTIME, labels).observe(time.monotonic() - started)


def on_success(sender: Any = None, **_: Any) -> None:
    _of(SUCCEEDED, _task_labels(sender)).inc()


def on_retry(sender: Any = None, **_: Any) -> None:
    RETRIED.labels(*_task_labels(sender)).inc()


def on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    request = sender.request
    if getattr(request, COUNTED, False):  # Celery reports a hard time limit twice when it dead-letters it
        return
    FAILED.labels(*_task_labels(sender), _labeler.exception(exception)).inc()
    if getattr(request, "id", None):  # never mark the task's shared default context
        setattr(request, COUNTED, True)


def on_rejected(message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    queue = _labeler.queue(getattr(message, "delivery_info", None))
    REJECTED.labels(queue, _labeler.task(headers.get("task"))).inc()
    MESSAGES_REJECTED.labels(queue, getattr(exc, "reason", "error")).inc()


def on_revoked(request: Any = None, **_: Any) -> None:
    REVOKED.labels(*_labeler.for_request(request, getattr(request, "name", None))).inc()


def record_time_limit(request: Any, soft: bool, ran_for: float) -> None:
    """Main process: a time limit fired; a hard one killed the child, so its runtime is recorded here."""
    labels = _labeler.for_request(request, request.name)
    TIME_LIMIT_HITS.labels(*labels, "soft" if soft else "hard").inc()
    if not soft:
        RUNTIME.labels(*labels).observe(ran_for)


def record_worker_lost(request: Any) -> None:
    WORKER_LOST.labels(*_labeler.for_request(request, request.name)).inc()


def connect() -> None:
    """Connect the receivers (in the worker's main process, before the pool forks)."""
    for signal, receiver in (
        (signals.task_received, on_received),
        (signals.task_prerun, on_prerun),
        (signals.task_postrun, on_postrun),
        (signals.task_success, on_success),
        (signals.task_retry, on_retry),
        (signals.task_failure, on_failure),
        (signals.task_rejected, on_rejected),
        (signals.task_revoked, on_revoked),
    ):
        signal.connect(receiver, dispatch_uid=f"fleet.metrics.{receiver.__name__}", weak=False)
