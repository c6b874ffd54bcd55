"""Keeping the garbage collector off what a process keeps for life, and off requests still in flight.

An API or worker process starts with a large heap that lives as long as it
does: Celery, kombu, Flask, pydantic's schemas, the task modules. CPython's
full collections walk every tracked object, so under load each one re-walks
that start-up heap; in a profile of the batch endpoint, collections took 12% to
15% of the process's CPU. ``gc.freeze()`` moves every object alive at that
moment to a permanent generation the collector no longer visits: what is
allocated afterwards is collected as before.

The API's processes also raise the youngest generation's threshold
(:data:`API_YOUNG_THRESHOLD`). CPython collects it each time 700 more
container objects are alive than at the last pass; the batch requests in
flight (built by eight threads at once, or waiting on their confirms in
greenlets) keep several thousand alive, so the count crossed 700 again and
again and every pass re-walked messages still in flight (about 4 µs of CPU per
task, 7% of a batch request's, with ``gc.callbacks``). Almost all of it is
freed by reference counting anyway.
"""

from __future__ import annotations

import gc
from typing import Any

#: Youngest-generation threshold of an API process: above the container objects
#: the requests in flight hold at once (a validated batch of 100 tasks and its
#: messages hold about 1,500; eight threads, 12,000), so a pass runs when
#: garbage builds up, not on every request.
#: The older generations keep CPython's ratios.
API_YOUNG_THRESHOLD = 20_000


def freeze_startup_objects(*_: Any, **__: Any) -> None:
    """Collect what start-up left behind, then keep the collector off everything still alive.

    A receiver of Celery's start-up signals and the body of gunicorn's hook: their arguments are not needed.
    """
    gc.collect()
    gc.freeze()


def tune_api_collector() -> None:
    """Freeze the start-up heap and raise the youngest generation's threshold (an API worker, after loading the app)."""
    freeze_startup_objects()
    gc.set_threshold(API_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
