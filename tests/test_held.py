"""Copies of Celery's request sets hold while pool threads change them (fleet.worker.held)."""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fleet.worker.held import snapshot

pytestmark = pytest.mark.pure


class _Request:
    """Stands in for a worker Request: weakly referenceable, hashed by identity."""


@contextmanager
def _churned() -> Iterator[tuple[weakref.WeakSet, list[_Request]]]:
    """A WeakSet a second thread keeps adding to and removing from, as pool threads do with
    ``active_requests`` when tasks start and finish."""
    steady, coming = [_Request() for _ in range(20)], [_Request() for _ in range(20)]
    requests: weakref.WeakSet = weakref.WeakSet(steady)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for request in coming:
                requests.add(request)
            for request in coming:
                requests.discard(request)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so iterations get interrupted
    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield requests, steady
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


def _first_error(copy: Callable[[weakref.WeakSet], list[Any]], requests: weakref.WeakSet, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            copy(requests)
        except RuntimeError as exc:
            return exc
    return None


def test_iterating_a_changing_weakset_fails_which_is_why_snapshot_exists() -> None:
    with _churned() as (requests, _):
        error = _first_error(list, requests, seconds=10)
    assert error is not None and "changed size during iteration" in str(error)


def test_snapshot_never_fails_and_keeps_every_steady_request() -> None:
    with _churned() as (requests, steady):
        assert _first_error(snapshot, requests, seconds=1.5) is None
        copy = snapshot(requests)
    assert set(steady) <= set(copy)
    assert len(copy) <= 40
