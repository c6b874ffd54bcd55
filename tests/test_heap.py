"""Start-up objects leave the garbage collector's full passes, in API and worker processes (fleet.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from celery import signals
from gunicorn.config import Config

from fleet.api import server
from fleet.celery_app import FleetCelery
from fleet.heap import API_YOUNG_THRESHOLD, freeze_startup_objects

pytestmark = pytest.mark.pure


@pytest.fixture
def thawed() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual
    gc.set_threshold(*thresholds)


def test_freezing_collects_start_up_garbage_and_freezes_the_rest(thawed: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    kept, dropped = Node(), Node()
    dropped_ref = weakref.ref(dropped)
    del dropped
    freeze_startup_objects("a gunicorn worker", signal="or a Celery signal's arguments")
    assert dropped_ref() is None  # collected first, not kept forever
    assert not any(item is kept for item in gc.get_objects())  # frozen: outside every generation
    gc.unfreeze()
    assert any(item is kept for item in gc.get_objects())


def test_workers_and_api_workers_freeze_after_start(pure_app: FleetCelery) -> None:
    for started in (signals.worker_ready, signals.worker_process_init):  # threads pools; prefork children
        receivers = [ref() if isinstance(ref, weakref.ref) else ref for _, ref in started.receivers]
        assert freeze_startup_objects in receivers, started.name
    config = Config()
    config.set("post_worker_init", server.post_worker_init)  # gunicorn refuses a hook of the wrong arity
    assert config.post_worker_init is server.post_worker_init


def test_an_api_worker_raises_the_young_threshold_and_still_frees_cycles(thawed: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    older = gc.get_threshold()[1:]
    gc.set_threshold(700, *older)
    server.post_worker_init("a gunicorn worker")  # the hook gunicorn calls once the app is loaded
    assert gc.get_threshold() == (API_YOUNG_THRESHOLD, *older)
    assert gc.get_freeze_count() > 0

    cycle = Node()
    cycle_ref = weakref.ref(cycle)
    del cycle
    held = [[] for _ in range(API_YOUNG_THRESHOLD // 2)]  # in flight: below the threshold, no pass yet
    assert cycle_ref() is not None
    held += [[] for _ in range(API_YOUNG_THRESHOLD)]  # garbage building up past it: a pass frees the cycle
    assert cycle_ref() is None
    assert len(held) > API_YOUNG_THRESHOLD
