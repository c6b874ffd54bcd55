"""A task the metrics tests need and the fleet does not have, added the way a team adds its module."""

from __future__ import annotations

import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded


@shared_task(name="tests.outlive_soft_limit")
def outlive_soft_limit(seconds: float) -> float:
    """Sleep ``seconds``, ignoring the soft time limit, so only the hard limit can end it."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeLimitExceeded:
            continue
    return seconds
