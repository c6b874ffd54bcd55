"""A task message as Celery's protocol 2 shapes it (``celery.app.amqp.as_task_v2``), as plain data.

For publishers that write raw bytes: the benchmarks' raw clients (so their figures compare
with Celery's on alike bytes) and the hostile-message tests (which break one part at a time).
"""

from __future__ import annotations

from typing import Any


def task_headers(
    task_id: str, task: str, args: tuple[Any, ...] | list[Any], origin: str, ignore_result: bool = False
) -> dict[str, Any]:
    """The headers Celery puts on ``task(*args)`` published from ``origin``."""
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": ignore_result,
    }


def task_body(args: list[Any]) -> list[Any]:
    """The body: ``[args, kwargs, embed]`` with no callbacks, errbacks, chain or chord."""
    return [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
