"""One task-shaped message: Celery protocol 2's headers and body, for the raw publishers.

Raw figures are only comparable with Celery's if the bytes on the wire are alike.
Plain data, no client library, so every publisher (py-amqp, kombu, librabbitmq) can use it
(fleet.testing.task_message; fleet itself is importable in the librabbitmq venv too).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fleet.testing.task_message import task_body, task_headers


def task_like(sent_at: float) -> tuple[str, dict[str, Any], str]:
    """(JSON body, headers, task id) as Celery would publish ``bench.noop(sent_at)``."""
    task_id = str(uuid.uuid4())
    headers = task_headers(task_id, "bench.noop", (sent_at,), "gen1@bench", ignore_result=True)
    return json.dumps(task_body([sent_at])), headers, task_id
