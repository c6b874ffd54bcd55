"""The worker-side Request: what only the main process sees of a task.

A hard time limit or a killed pool child ends the task outside the child, so
no child signal can count it. ``FlaskTask.Request`` points here; the task's
context is pushed while Celery's own failure handling runs, so the
``task_failure`` receivers label it with the right queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError

from fleet.worker.consumer import FleetRequest


class MeteredRequest(FleetRequest):
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
        from fleet.metrics import worker

        ran_for = time.time() - self.time_start if self.time_start else timeout  # time_start is wall-clock
        worker.record_time_limit(self, soft, ran_for)
        with self._in_context():
            super().on_timeout(soft, timeout)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        from fleet.metrics import worker

        if self._lost_worker(exc_info.exception):
            worker.record_worker_lost(self)
        with self._in_context():
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
