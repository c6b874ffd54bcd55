"""Time limits and memory recycling for a worker running tasks in threads.

Celery's ``threads`` pool enforces neither time limits nor recycling; prefork does both
by killing or replacing a child process. A threaded fleet worker is one process that
consumes for itself (no pipe hand-off, the reason it is faster, docs/PERFORMANCE.md),
so fleet enforces them here, the way Dramatiq's ``TimeLimit`` middleware does:

- **soft limit**: a watchdog thread raises ``SoftTimeLimitExceeded`` inside the task's
  thread (``PyThreadState_SetAsyncExc``). The task can catch it and clean up; if it does
  not, it fails like any task (dead-lettered, or retried if it asks to be).
- **hard limit**: a thread cannot be killed, and a task stuck in a C call never sees an
  async exception. So, as prefork's hard limit does to its child, the task is failed and
  dead-lettered (:class:`fleet.worker.request.DeadLetterOnTimeout`) and then the whole
  process exits with :data:`EXIT_HARD_LIMIT`. The other tasks it was running are not
  acked (late acks): RabbitMQ redelivers them, and supervisor or Kubernetes start a new
  process.
- **memory**: past ``max_memory_per_child_kb`` of resident memory after a task, the
  worker stops warmly (running tasks finish, prefetched ones go back to the queue) and
  exits with :data:`EXIT_RECYCLE`, to be restarted.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import concurrency
from celery.concurrency.base import apply_target
from celery.concurrency.thread import ApplyResult, TaskPool
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.worker import state as worker_state

from fleet.worker import taskrun
from fleet.worker.held import snapshot

logger = logging.getLogger("fleet.limits")

#: exit code of a process replaced because a task passed its hard time limit
EXIT_HARD_LIMIT = 70
#: exit code of a process that stopped warmly to give its memory back
EXIT_RECYCLE = 75
#: how often the watchdog looks at the running tasks (seconds); limits fire within this
TICK = 0.1
#: seconds between two memory checks (after a task ends)
MEMORY_EVERY = 1.0
#: seconds between dead-lettering a hard-limited task and the process exit
EXIT_GRACE = 0.5
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_installed: list[ThreadLimits] = []


def enforced() -> bool:
    """Does this process run tasks in threads under fleet's limits (:func:`install` ran)?"""
    return bool(_installed)


def resident_kb() -> int:
    """This process's resident memory now, in KiB (``/proc/self/statm``: one read, no psutil)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_KB


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in thread ``ident`` at its next bytecode; False if no such thread."""
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type)) == 1


@dataclass
class _Running:
    task_id: str
    soft_at: float | None
    hard_at: float | None
    soft_limit: float | None
    hard_limit: float | None


def _limits(
    task: Any, request: Any, soft_default: float | None, hard_default: float | None
) -> tuple[float | None, float | None]:
    """(soft, hard) for the running task: the message's ``timelimit``, else the task's, else the pool's."""
    hard, soft = request.timelimit or (None, None)
    soft = soft or task.soft_time_limit or soft_default
    hard = hard or task.time_limit or hard_default
    return soft, hard


class ThreadLimits:
    """The watchdog of one threaded worker process; :func:`install` makes and connects it."""

    def __init__(self, soft_limit: float | None, hard_limit: float | None, max_memory_kb: int | None) -> None:
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.max_memory_kb = max_memory_kb
        self._running: dict[int, _Running] = {}  # thread ident -> the task it runs
        self._lock = threading.Lock()
        self._recycling = False
        self._memory_due = 0.0  # monotonic time of the next memory check
        self._thread = threading.Thread(target=self._watch, name="fleet-limits", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_started(self, task: Any, request: Any, task_id: str) -> None:
        """A run starts in this thread: its limits from now (fleet.worker.taskrun)."""
        if request.is_eager:  # apply() inside a task: it runs within the outer task's limits
            return
        soft, hard = _limits(task, request, self.soft_limit, self.hard_limit)
        now = time.monotonic()
        entry = _Running(task_id, soft and now + soft, hard and now + hard, soft, hard)
        with self._lock:
            self._running[threading.get_ident()] = entry

    def run_ended(self, task: Any, request: Any, task_id: str, state: str | None) -> None:
        """The run in this thread ended: no limit fires for it; maybe recycle for memory."""
        if request.is_eager:  # the outer task is still running, under its own limits
            return
        with self._lock:
            self._running.pop(threading.get_ident(), None)
        if not self.max_memory_kb or self._recycling:
            return
        now = time.monotonic()
        if now < self._memory_due:  # reading /proc after every task was 4.6% of a no-op's time (py-spy)
            return
        self._memory_due = now + MEMORY_EVERY
        used = resident_kb()
        if used > self.max_memory_kb:
            self._recycling = True
            logger.warning(
                "worker process uses %d KiB, above its %d KiB limit: stopping warmly to be restarted",
                used,
                self.max_memory_kb,
            )
            worker_state.should_stop = EXIT_RECYCLE  # the consumer loop raises WorkerShutdown

    def interrupt(self, task_id: str, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the thread running ``task_id``; False if no thread runs it."""
        with self._lock:
            for ident, entry in self._running.items():
                if entry.task_id == task_id:
                    entry.soft_at = entry.hard_at = None  # it is stopping: no limit fires on top
                    return raise_in_thread(ident, exc_type)
        return False

    def _watch(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            with self._lock:
                for ident, entry in list(self._running.items()):
                    if entry.hard_at is not None and now >= entry.hard_at:
                        self._hard(entry)  # does not return
                    if entry.soft_at is not None and now >= entry.soft_at:
                        entry.soft_at = None  # once
                        if raise_in_thread(ident, SoftTimeLimitExceeded):
                            self._on_timeout(entry, soft=True)

    @staticmethod
    def _request(task_id: str) -> Any:
        """The worker's Request for ``task_id`` (None if it is no longer active)."""
        return next((r for r in snapshot(worker_state.active_requests) if r.id == task_id), None)

    def _on_timeout(self, entry: _Running, soft: bool) -> None:
        """Tell the task's Request (the log line, the metric)."""
        request = self._request(entry.task_id)
        if request is not None:
            request.on_timeout(soft, entry.soft_limit if soft else entry.hard_limit)

    def _hard(self, entry: _Running) -> None:
        """Fail and dead-letter the task as prefork does, then end the process (its thread cannot be stopped).

        The order is billiard's: the failure first (it rejects the message into the DLQ,
        fleet.worker.request.DeadLetterOnTimeout), then the timeout hook (log, FAILURE, metric),
        whose own requeue then finds the message already settled.
        """
        try:
            request = self._request(entry.task_id)
            if request is not None:
                try:
                    raise TimeLimitExceeded(entry.hard_limit)
                except TimeLimitExceeded:
                    request.on_failure(ExceptionInfo(), send_failed_event=True, return_ok=False)
                request.on_timeout(False, entry.hard_limit)
            logger.error(
                "task %s passed its hard time limit (%ss): exiting so the process is replaced; "
                "the other tasks it ran go back to their queue",
                entry.task_id,
                entry.hard_limit,
            )
        except BaseException:  # noqa: BLE001 - exit whatever happened: the message is redelivered
            logger.exception("handling the hard time limit of task %s failed", entry.task_id)
        finally:
            time.sleep(EXIT_GRACE)  # let the rejection reach RabbitMQ before the socket closes
            logging.shutdown()
            os._exit(EXIT_HARD_LIMIT)


def interrupt(task_id: str, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the thread running ``task_id`` in this process; False if none runs it."""
    return any(limits.interrupt(task_id, exc_type) for limits in _installed)


def exit_without_running_tasks(code: int) -> None:
    """After the worker stopped: exit now if task threads still run (a soft shutdown timed out).

    Python would join them before exiting, i.e. wait up to their hard time limit, the wait the
    soft shutdown bounds. Their messages were not acked and go back to the queue.
    """
    running = sum(len(limits._running) for limits in _installed)
    if not running:
        return
    logger.warning("%d tasks still running after the shutdown: exiting without them (redelivered)", running)
    logging.shutdown()
    os._exit(code)


def _apply(
    still_runs: Callable[[], bool] | None,
    target: Callable[..., Any],
    args: Any,
    kwargs: Any,
    callback: Callable[..., Any] | None,
    accept_callback: Callable[..., Any] | None,
) -> None:
    """Celery's ``apply_target`` in a pool thread, once the request says it still runs.

    Not once the worker is stopping: a task that has not started stays unacked and goes back
    to the queue, as ``on_stop``'s cancelled futures do; the threads would otherwise keep
    starting queued tasks until then (a recycling process ran all it had prefetched).
    """
    if worker_state.should_stop is not None or worker_state.should_terminate is not None:
        return
    try:
        runs = still_runs is None or still_runs()
    except Exception:  # noqa: BLE001 - the check itself failed: run it (at-least-once, never lost)
        logger.exception("the duplicate check failed; running the task")
        runs = True
    if runs:
        apply_target(target, args, kwargs, callback, accept_callback)


class ThreadPool(TaskPool):
    """Celery's thread pool, with two changes.

    - Before a task runs, its thread asks the request whether it still runs
      (:meth:`fleet.worker.request.OnceRequest.still_runs`, the result store's part of the
      duplicate check), off the event loop. Celery hands the pool the request's bound methods;
      the request is the callback's ``__self__``.
    - A cold shutdown does not wait for running threads: a timed-out soft shutdown stops the
      pool, and Celery's would join every task thread, i.e. wait up to the hard time limit.
      Their messages are not acked and go back to the queue.
    """

    def on_apply(
        self,
        target: Callable[..., Any],
        args: Any = None,
        kwargs: Any = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> ApplyResult:
        still_runs = getattr(getattr(callback, "__self__", None), "still_runs", None)
        return ApplyResult(self.executor.submit(_apply, still_runs, target, args, kwargs, callback, accept_callback))

    def on_stop(self) -> None:
        self.executor.shutdown(wait=not worker_state.should_terminate, cancel_futures=True)


def install(soft_limit: float | None, hard_limit: float | None, max_memory_kb: int | None) -> ThreadLimits:
    """Enforce the pool's limits in this (threaded) worker process; call once, before it consumes."""
    concurrency.ALIASES["threads"] = f"{__name__}:ThreadPool"  # what --pool=threads loads in this process
    limits = ThreadLimits(soft_limit, hard_limit, max_memory_kb)
    taskrun.register("limits", limits.run_started, limits.run_ended)
    limits.start()
    _installed.append(limits)
    return limits
