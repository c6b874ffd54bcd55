"""The Request every task runs through in the worker's main process, one link per concern.

``FlaskTask.Request`` names :class:`OnceRequest`; the chain, from Celery's own up:

1. :class:`DeadLetterOnTimeout` dead-letters a task killed by its hard time limit;
2. :class:`MeteredRequest` counts what only the main process sees (hard time limits,
   lost pool children);
3. :class:`ThreadTerminableRequest` terminates a task running in a thread (fleet.worker.limits),
   and hands the thread the body already decoded;
4. :class:`OnceRequest` does not run a task id that already ran or is running
   (the rule: :mod:`fleet.worker.dedup`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.exceptions import Ignore, Retry
from celery.worker import state as worker_state
from celery.worker.request import Request

from fleet.worker import limits
from fleet.worker.dedup import LOST, duplicate_of, held_copy

logger = logging.getLogger("fleet.dedup")


class DeadLetterOnTimeout(Request):
    """Dead-letters a task killed by its hard time limit instead of requeueing it.

    With late acks Celery requeues a timed-out task, which would time out again,
    forever. Its FAILURE is already stored by then; the message goes to
    ``<queue>.dlq`` where an operator can see and replay it.
    """

    _timed_out = False

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # unwrap ExceptionWithTraceback
        self._timed_out = isinstance(exc, TimeLimitExceeded)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def reject(self, requeue: bool = False) -> None:
        super().reject(requeue=requeue and not self._timed_out)


class MeteredRequest(DeadLetterOnTimeout):
    """What only the main process sees of a task, counted (the app's ``worker_metrics``).

    A hard time limit or a killed pool child ends the task outside the child, so
    no child signal can count it. The task's context is pushed while Celery's own
    failure handling runs, so the ``task_failure`` receivers label it with the right queue.
    """

    @contextmanager
    def _in_context(self) -> Iterator[None]:
        self.task.request_stack.push(self._context)
        try:
            yield
        finally:
            self.task.request_stack.pop()

    def _lost_worker(self, exc: BaseException) -> bool:
        """Did the pool process die under the task? (Celery's own reading of the exit.)"""
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            return not (self._already_cancelled or self._already_revoked)
        return isinstance(exc, WorkerLostError)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        metrics = self.app.worker_metrics
        if metrics is not None:
            ran_for = time.time() - self.time_start if self.time_start else timeout  # time_start is wall-clock
            metrics.on_time_limit(self, soft, ran_for)
        with self._in_context():
            super().on_timeout(soft, timeout)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        metrics = self.app.worker_metrics
        if metrics is not None and self._lost_worker(exc_info.exception):
            metrics.on_worker_lost(self)
        with self._in_context():
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


class ThreadTerminableRequest(MeteredRequest):
    """``revoke(terminate=True)`` for a task running in a thread of a fleet worker.

    Prefork signals the child; a thread cannot be signalled, so the revoke is announced
    (REVOKED stored, message acked) and ``Ignore`` is raised inside the task's thread: the
    task stops at its next bytecode and its outcome is not stored over the REVOKED.
    """

    def __init__(self, message: Any, *args: Any, body: Any = None, decoded: bool = False, **kwargs: Any) -> None:
        # Celery's strategy has decoded the body in this process already (message.payload, cached);
        # a prefork child gets the raw body through its pipe and decodes it, and so would a pool
        # thread, a second JSON decode per task. A decoded request skips it (fast_trace_task).
        if not decoded and limits.enforced():
            body, decoded = message.payload, True
        super().__init__(message, *args, body=body, decoded=decoded, **kwargs)

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        """A shutdown's cancel (soft shutdown timed out): the thread cannot be stopped, and nothing is
        raised into it (an ``Ignore`` would ack the message). The process exits without it
        (fleet.worker.limits.exit_without_running_tasks) and the message is redelivered; RETRY is
        stored so the redelivery is not taken for a crash (fleet.worker.dedup.LOST)."""
        if not (limits.enforced() and self.time_start):
            return super().cancel(pool, signal, emit_retry)
        if not emit_retry and self.store_errors and not self.task.ignore_result:
            cancelled = Retry(message="cancelled by a worker shutdown")
            self.task.backend.mark_as_retry(self.id, cancelled, request=self._context)
        self._announce_cancelled(emit_retry=emit_retry)
        return None

    def terminate(self, pool: Any, signal: Any = None) -> None:
        if not (limits.enforced() and self.time_start):
            return super().terminate(pool, signal)
        if limits.interrupt(self.id, Ignore):
            self._announce_revoked("terminated", True, signal, False)
        return None


class OnceRequest(ThreadTerminableRequest):
    """A request that is not run when its task id already ran or is running (:mod:`fleet.worker.dedup`).

    The check runs where Celery asks whether a request was revoked: in the main
    process, just before it goes to the pool (or on arrival for a task with an
    expiry), once per delivery. A threaded worker reads the result store later, in
    the thread about to run the task (:meth:`still_runs`): in the event loop, a Redis
    round trip per delivery, waiting on the GIL behind 16 task threads, held up every
    delivery behind it (0.8 ms a task, py-spy).
    """

    _fleet_checked = False

    def revoked(self) -> bool:
        if super().revoked():
            return True
        if self._fleet_checked:
            return False
        self._fleet_checked = True
        threaded = limits.enforced()
        return self._not_run(duplicate_of(self, threaded=threaded, stored=not threaded))

    def still_runs(self) -> bool:
        """In a threaded worker's pool thread, before the task: the stored state's part of the rule.
        False: not run (acked, or retried as lost), as :meth:`revoked` would have."""
        return not self._not_run(duplicate_of(self, threaded=True, held=False, claim=True))

    def _not_run(self, reason: str | None) -> bool:
        """Act on ``reason`` (:func:`fleet.worker.dedup.duplicate_of`); True if the delivery does not run."""
        if reason is None:
            return False
        if reason == LOST:
            self._retry_lost()
            return True
        logger.info("task %s[%s] not run again: %s", self.name, self.id, reason)
        worker_state.task_ready(self)
        other = held_copy(self)
        if other is not None:  # Celery indexes requests by id: point it back at the copy that runs
            worker_state.requests[self.id] = other
        self.acknowledge()
        return True

    def _retry_lost(self) -> None:
        """Celery's handling of a pool child lost under the task: a retry counted against
        ``max_retries``, or past them a FAILURE dead-lettered."""
        logger.warning("task %s[%s] was running when its worker process died; retrying it", self.name, self.id)
        try:
            raise WorkerLostError(f"Worker exited while running task {self.id} (redelivered, stored as STARTED).")
        except WorkerLostError:
            self.on_failure(ExceptionInfo(), send_failed_event=True, return_ok=False)
