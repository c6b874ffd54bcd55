"""A test-only task that blocks the worker's event loop (loaded with FLEET_TASK_MODULES).

Run on a threads pool, it asks the main thread's event loop to sleep, which is what a wedged
worker looks like from outside: the process lives, its loop does not turn.
"""

from __future__ import annotations

import time

from celery import shared_task
from kombu.asynchronous import get_event_loop


@shared_task(name="tests.block_event_loop")
def block_event_loop(seconds: float) -> bool:
    hub = get_event_loop()
    if hub is None:
        return False
    hub.call_soon(time.sleep, seconds)
    return True
