"""The per-task success lines written in batches: one write per batch instead of one per task.

Every task logs one INFO line (:mod:`fleet.worker.tasklog`). Written one at a time, each line
is a write syscall made under the handler's lock: the thread gives up the GIL for the
syscall and the pool's other threads queue on the lock behind it. In ``bench.ab`` that line
cost about 8% of a no-op task's worker CPU. Here such a line (INFO or below from a logger in
:data:`BATCHED`) is formatted in the thread that logs it and buffered; a writer thread writes
the buffer every :data:`FLUSH_INTERVAL` seconds. Any other line (a warning, the worker's own
start-up and shutdown lines, a task's own logging) writes the buffer and itself at once, so
lines stay in order and nothing but success lines is ever late. ``logging.shutdown()`` (a
normal exit, and fleet's own exits on a hard time limit or a timed-out shutdown) writes what
is left; a kill -9 loses at most the last :data:`FLUSH_INTERVAL` of success lines.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, TextIO

from celery import signals

from fleet.worker import tasklog

#: the loggers whose INFO lines are batched: the per-task outcome lines
BATCHED = frozenset({tasklog.logger.name})
#: how late a batched line may reach the log (seconds)
FLUSH_INTERVAL = 0.1
#: lines buffered before they are written whatever the time
MAX_BUFFERED = 1000


class BatchedStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes the :data:`BATCHED` loggers' INFO lines in batches (see the module)."""

    def __init__(self, stream: TextIO, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__(stream)
        self.interval = interval
        self._pending: list[str] = []
        self._writer_pid = 0  # the process whose writer thread runs (none yet, or a fork's parent)
        self._stop_writer = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        # handle() holds self.lock
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - as StreamHandler: report it, never raise into the task
            self.handleError(record)
            return
        if self._writer_pid != os.getpid():
            self._start_writer()
        self._pending.append(line)
        if record.levelno >= logging.WARNING or record.name not in BATCHED or len(self._pending) >= MAX_BUFFERED:
            self._write_pending()

    def flush(self) -> None:
        with self.lock:
            self._write_pending()

    def close(self) -> None:
        self._stop_writer.set()
        self.flush()
        super().close()

    def _write_pending(self) -> None:
        """Write the buffer (the lock held: batches and warnings stay in order)."""
        if self._writer_pid != os.getpid():  # a fork's copy of its parent's lines: the parent writes them
            self._pending.clear()
        if not self._pending or self.stream is None:
            return
        data = "".join(self._pending)
        self._pending.clear()
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: what logging does when it cannot write
            if logging.raiseExceptions:
                logging.lastResort.handle(logging.makeLogRecord({"msg": f"could not write {len(data)} log bytes"}))

    def _start_writer(self) -> None:
        """The first line in this process: start its writer (after a fork the parent's did not come along)."""
        self._pending.clear()  # what a fork copied from its parent: the parent writes it
        self._writer_pid = os.getpid()
        self._stop_writer = threading.Event()
        threading.Thread(
            target=self._write_every_interval, args=(self._stop_writer,), name="fleet-log", daemon=True
        ).start()

    def _write_every_interval(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.flush()


def batch_stderr_lines(logger: logging.Logger | None = None, **_: Any) -> None:
    """``after_setup_logger``: put the stream handlers Celery gave the root logger (stderr, where
    supervisor and Kubernetes collect the logs) behind a :class:`BatchedStreamHandler`, same
    format, level and filters. A log file (``--logfile``) keeps Celery's handler."""
    if logger is None:
        return
    for index, handler in enumerate(list(logger.handlers)):
        if type(handler) is not logging.StreamHandler:
            continue
        batched = BatchedStreamHandler(handler.stream)
        batched.setLevel(handler.level)
        batched.setFormatter(handler.formatter)
        for log_filter in handler.filters:
            batched.addFilter(log_filter)
        logger.handlers[index] = batched


def connect() -> None:
    """Connect the handler swap; idempotent (a dispatch uid)."""
    signals.after_setup_logger.connect(batch_stderr_lines, dispatch_uid="fleet.batched_log_lines", weak=False)
