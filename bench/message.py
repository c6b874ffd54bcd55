"""One task-shaped message: Celery protocol 2's headers and body, for the raw publishers.

Raw figures are only comparable with Celery's if the bytes on the wire are alike.
Plain data, no client library, so every publisher (py-amqp, kombu, librabbitmq) can use it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any


def task_like(sent_at: float) -> tuple[str, dict[str, Any], str]:
    """(JSON body, headers, task id) as Celery would publish ``bench.noop(sent_at)``."""
    task_id = str(uuid.uuid4())
    headers: dict[str, Any] = {
        "lang": "py",
        "task": "bench.noop",
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
        "argsrepr": f"({sent_at},)",
        "kwargsrepr": "{}",
        "origin": "gen1@bench",
        "ignore_result": True,
    }
    body = json.dumps([[sent_at], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return body, headers, task_id
