"""The batched success lines (fleet.worker.logwrites): they arrive within the interval, any other
line (a warning, the worker's own INFO) writes everything before it at once and in order, nothing
is lost at close, a fork writes no line twice, and only Celery's stderr handler is swapped.
Real files, real forks."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.worker import tasklog
from fleet.worker.logwrites import MAX_BUFFERED, BatchedStreamHandler, batch_stderr_lines

pytestmark = pytest.mark.pure


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "worker.log"


Batched = Callable[[float], tuple[BatchedStreamHandler, logging.Logger]]


@pytest.fixture
def batched(log_file: Path) -> Iterator[Batched]:
    """A BatchedStreamHandler writing ``log_file``, the only handler of the per-task lines'
    logger (fleet.tasks); the logger is restored afterwards."""
    logger = tasklog.logger
    saved = logger.handlers[:], logger.propagate, logger.level
    streams = []

    def batched(interval: float) -> tuple[BatchedStreamHandler, logging.Logger]:
        streams.append(stream := log_file.open("w"))
        handler = BatchedStreamHandler(stream, interval=interval)
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        return handler, logger

    yield batched
    for stream in streams:
        stream.close()
    logger.handlers, logger.propagate, logger.level = saved


def _wait_for(path: Path, text: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while text not in (content := path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return content


def test_success_lines_wait_for_the_writer_and_any_other_line_writes_everything_before_it(
    log_file: Path, batched: Batched
) -> None:
    handler, logger = batched(3600)  # the writer never wakes in this test
    logger.info("first")
    logger.info("second")
    assert log_file.read_text() == "", "the per-task INFO lines are buffered"
    logger.warning("third")
    assert log_file.read_text() == "first\nsecond\nthird\n", "a warning is written at once, after what came before"
    logger.info("fourth")
    handler.handle(logging.makeLogRecord({"name": "celery.apps.worker", "levelno": logging.INFO, "msg": "ready."}))
    assert log_file.read_text().endswith("third\nfourth\nready.\n"), "the worker's own INFO lines are never late"
    logger.info("fifth")
    handler.close()
    assert log_file.read_text().endswith("ready.\nfifth\n"), "close writes what is left"


def test_the_writer_writes_success_lines_within_its_interval(log_file: Path, batched: Batched) -> None:
    handler, logger = batched(0.05)
    logger.info("quiet period line")
    content = _wait_for(log_file, "quiet period line")
    handler.close()
    assert content == "quiet period line\n"


def test_a_full_buffer_is_written_without_waiting(log_file: Path, batched: Batched) -> None:
    handler, logger = batched(3600)
    for n in range(MAX_BUFFERED):
        logger.info("line %d", n)
    written = log_file.read_text().splitlines()
    handler.close()
    assert written == [f"line {n}" for n in range(MAX_BUFFERED)]


def test_a_forked_child_writes_its_own_lines_and_never_its_parents_again(log_file: Path, batched: Batched) -> None:
    handler, logger = batched(3600)
    logger.info("parent before fork")  # buffered when the child is forked
    pid = os.fork()
    if pid == 0:  # the child: its exit path (logging.shutdown) flushes, then one line of its own
        try:
            handler.flush()
            logger.info("child line")
            handler.flush()
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    logger.info("parent after fork")
    handler.close()
    lines = log_file.read_text().splitlines()
    assert sorted(lines) == ["child line", "parent after fork", "parent before fork"], lines


def test_only_the_stderr_stream_handler_is_swapped_keeping_format_level_and_filters(tmp_path: Path) -> None:
    logger = logging.getLogger(f"test.logwrites.swap.{time.monotonic_ns()}")
    stderr = logging.StreamHandler()
    stderr.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    stderr.setLevel(logging.INFO)
    only_fleet = logging.Filter("fleet")
    stderr.addFilter(only_fleet)
    to_file = logging.FileHandler(tmp_path / "celery.log")
    logger.handlers = [stderr, to_file]
    try:
        batch_stderr_lines(logger=logger)
        swapped, kept = logger.handlers
        assert isinstance(swapped, BatchedStreamHandler) and swapped.stream is stderr.stream
        assert swapped.formatter is stderr.formatter and swapped.level == logging.INFO
        assert swapped.filters == [only_fleet]
        assert kept is to_file, "a log file keeps Celery's handler"
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers = []
