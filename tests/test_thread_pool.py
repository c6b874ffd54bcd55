"""fleet's thread pool asks the request, in the task's thread, whether it still runs (limits.ThreadPool)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery.worker import state as worker_state

from fleet.worker.limits import ThreadPool

pytestmark = pytest.mark.pure


class Request:
    """What the pool sees of a worker Request: bound callbacks, and ``still_runs``."""

    def __init__(self, runs: bool | Exception) -> None:
        self.runs = runs
        self.asked_in: list[threading.Thread] = []
        self.accepted = threading.Event()
        self.done: list[Any] = []
        self.finished = threading.Event()

    def still_runs(self) -> bool:
        self.asked_in.append(threading.current_thread())
        if isinstance(self.runs, Exception):
            raise self.runs
        if not self.runs:
            self.finished.set()  # settled by the request itself: nothing else is called
        return self.runs

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        self.accepted.set()

    def on_success(self, result: Any) -> None:
        self.done.append(result)
        self.finished.set()


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    pool = ThreadPool(limit=2)
    pool.start()
    yield pool
    pool.stop()


def submit(pool: ThreadPool, request: Request, ran: list[str]) -> None:
    pool.apply_async(ran.append, args=("ran",), callback=request.on_success, accept_callback=request.on_accepted).wait(
        5
    )
    assert request.finished.wait(5)


def test_a_request_that_still_runs_is_asked_in_the_pool_thread_then_run(pool: ThreadPool) -> None:
    request, ran = Request(runs=True), []
    submit(pool, request, ran)
    assert ran == ["ran"] and request.accepted.is_set() and request.done == [None]
    assert len(request.asked_in) == 1 and request.asked_in[0] is not threading.main_thread()


def test_a_request_that_does_not_run_is_neither_accepted_nor_run(pool: ThreadPool) -> None:
    request, ran = Request(runs=False), []
    submit(pool, request, ran)
    assert ran == [] and not request.accepted.is_set() and request.done == []


def test_a_check_that_fails_runs_the_task_rather_than_lose_it(pool: ThreadPool) -> None:
    request, ran = Request(runs=RuntimeError("store away")), []
    submit(pool, request, ran)
    assert ran == ["ran"] and request.done == [None]


def test_once_the_worker_is_stopping_a_queued_task_neither_runs_nor_is_checked(
    pool: ThreadPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It stays unacked and goes back to the queue; the duplicate check (a STARTED write on Redis) is not made."""
    monkeypatch.setattr(worker_state, "should_stop", 0)
    request, ran = Request(runs=True), []
    pool.apply_async(ran.append, args=("ran",), callback=request.on_success, accept_callback=request.on_accepted).wait(
        5
    )
    assert ran == [] and request.asked_in == [] and not request.accepted.is_set() and request.done == []
