"""The fleet's benchmark tasks, loaded by bench workers through FLEET_TASK_MODULES=bench.tasks.

Not in routing.ROUTES, so they go to the `default` queue like any unlisted task;
a per-call ``queue=`` sends them elsewhere (the priority flood and the I/O-bound
scenario do). Only ``bench.store`` keeps its result: the others are
fire-and-forget, so no result backend write is timed where none is meant.
"""

from __future__ import annotations

import time

from celery import shared_task

from bench import probe, work


@shared_task(name="bench.noop", ignore_result=True)
def noop(sent_at: float, tag: str = "-") -> None:
    """Does nothing but tell the benchmark it ran."""
    probe.record(sent_at, tag)


@shared_task(name="bench.spin", ignore_result=True)
def spin(sent_at: float, iterations: int) -> None:
    """About 5 ms of pure-Python work (bench.work); reports the CPU it took when done."""
    probe.record(sent_at, "spin", cpu=work.timed_spin(iterations))


@shared_task(name="bench.wait", ignore_result=True)
def wait(sent_at: float, seconds: float) -> None:
    """Waits as an I/O-bound task waits for its peer (the GIL released); reports when done."""
    time.sleep(seconds)
    probe.record(sent_at, "wait")


@shared_task(name="bench.store")
def store(sent_at: float) -> float:
    """A no-op whose result is stored, as for any task a caller asks the result of."""
    probe.record(sent_at, "store")
    return sent_at
