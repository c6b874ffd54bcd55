"""The publish-time stamp the queue-wait histogram is measured from.

Every publisher (API, tasks fanning out, beat, ``celery call``) stamps the
message header when Celery publishes it; the worker observes ``start - stamp``.
Messages with an ETA/countdown are excluded on the worker side: their wait is
chosen, not suffered.
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

PUBLISHED_AT_HEADER = "fleet_published_at"


def stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish`` receiver: (re)stamp the message with the wall-clock time."""
    if headers is not None:
        headers[PUBLISHED_AT_HEADER] = time.time()


def connect() -> None:
    signals.before_task_publish.connect(stamp_publish_time, dispatch_uid="fleet.metrics.stamp", weak=False)
