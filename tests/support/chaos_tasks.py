"""Tasks for fault tests, loaded through FLEET_TASK_MODULES (the documented extension point)."""

from __future__ import annotations

import os
import signal
import time

import redis
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from tests.support.ledger import REDIS_URL, Ledger


@shared_task(bind=True, name="tests.record")
def record(self: Task, ledger: str, seconds: float = 0.0) -> str:
    """Work for ``seconds``, then record completion in the ledger."""
    time.sleep(seconds)
    Ledger(ledger).record(self.request.id)
    return self.request.id


@shared_task(bind=True, name="tests.die_once")
def die_once(self: Task, ledger: str) -> str:
    """Kill its own process on the first run (as an OOM kill would), complete on the next."""
    if redis.Redis.from_url(REDIS_URL).set(f"{ledger}:died:{self.request.id}", 1, nx=True, ex=600):
        os.kill(os.getpid(), signal.SIGKILL)
    Ledger(ledger).record(self.request.id)
    return self.request.id


@shared_task(bind=True, name="tests.poison", max_retries=2)
def poison(self: Task, ledger: str) -> None:
    """Kill its own process every time; counts its runs."""
    redis.Redis.from_url(REDIS_URL).incr(f"{ledger}:poison-runs")
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(name="tests.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task(name="tests.spin")
def spin(seconds: float) -> float:
    """Wait in Python for ``seconds``: a thread's soft limit lands at its next bytecode, and a
    C call (one long ``time.sleep``) would hold it off until it returns."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return seconds


@shared_task(name="tests.spin_after_eager")
def spin_after_eager(seconds: float) -> float:
    """Run another task eagerly first (``apply()``: a trace of its own, with its own prerun and
    postrun), then overrun the soft limit."""
    sleep.apply((0.01,))
    return spin(seconds)


@shared_task(name="tests.stubborn")
def stubborn(seconds: float) -> float:
    """Ignore the soft time limit (as code stuck in C would), so only the hard limit stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(deadline - time.monotonic())
        except SoftTimeLimitExceeded:
            pass
    return seconds


@shared_task(bind=True, name="tests.retry_once")
def retry_once(self: Task, ledger: str) -> str:
    """Ask Celery for a retry on the first run (the same task id, republished), complete on the next."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    Ledger(ledger).record(self.request.id)
    return self.request.id


@shared_task(bind=True, name="tests.fail_once")
def fail_once(self: Task, ledger: str) -> str:
    """Fail for good on the first run (dead-lettered), complete when run again (a DLQ replay)."""
    if redis.Redis.from_url(REDIS_URL).set(f"{ledger}:failed:{self.request.id}", 1, nx=True, ex=600):
        raise RuntimeError("failing once, on purpose")
    Ledger(ledger).record(self.request.id)
    return self.request.id


@shared_task(
    bind=True,
    name="tests.retry_on_soft_limit",
    autoretry_for=(SoftTimeLimitExceeded,),
    max_retries=1,
    default_retry_delay=0,
)
def retry_on_soft_limit(self: Task, ledger: str) -> str:
    """Overrun the soft limit on the first run (retried for it, as configured), complete on the next."""
    if self.request.retries == 0:
        spin(30)
    Ledger(ledger).record(self.request.id)
    return self.request.id
