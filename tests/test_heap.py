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
from fleet.heap import freeze_startup_objects

pytestmark = pytest.mark.pure


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


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
