"""Reading a task's outcome in tests."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery


def succeeded(app: Celery, task_id: str, timeout: float = 60) -> Any:
    """The result of ``task_id`` once it is stored as SUCCESS.

    For a task run again (a dead letter replayed): its earlier FAILURE stays stored until
    the new run starts, so ``AsyncResult.get`` could return that at once; and an
    ``AsyncResult`` keeps the first ready state it read, hence a fresh one per poll.
    """
    deadline = time.monotonic() + timeout
    while (result := app.AsyncResult(task_id)).state != "SUCCESS":
        assert time.monotonic() < deadline, f"task {task_id} did not succeed within {timeout}s ({result.state})"
        time.sleep(0.2)
    return result.result
