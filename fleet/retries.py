"""Retry timing shared by every task that retries."""

from __future__ import annotations

import random
from collections.abc import Callable

from celery import Task
from celery.exceptions import Retry


def backoff_delay(retries: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``retries + 1``.

    Exponential with "equal jitter": half of the nominal delay is fixed and half
    random. Waits still grow with every attempt (unlike Celery's full jitter,
    which may wait 0 s), while peers that failed together spread out.
    """
    nominal = min(cap, base * 2**retries)
    return nominal / 2 + rand() * nominal / 2


def retry_later(task: Task, exc: Exception) -> Retry:
    """``task.retry`` after the fleet's backoff; use as ``raise retry_later(self, exc)``.

    Past ``max_retries`` Celery re-raises ``exc``: the task fails and its
    message is dead-lettered to ``<queue>.dlq``.
    """
    settings = task.app.fleet_settings
    countdown = backoff_delay(task.request.retries, settings.retry_backoff_base, settings.retry_backoff_max)
    return task.retry(exc=exc, countdown=countdown)
