"""The fleet's benchmark task, loaded by bench workers through FLEET_TASK_MODULES=bench.tasks.

Not in routing.ROUTES, so it goes to the `default` queue like any unlisted task;
a per-call ``queue=`` sends it elsewhere (the priority flood does). Its result is
ignored, as for any fire-and-forget task, so no result backend write is timed.
"""

from __future__ import annotations

from celery import shared_task

from bench import probe


@shared_task(name="bench.noop", ignore_result=True)
def noop(sent_at: float, tag: str = "-") -> None:
    """Does nothing but tell the benchmark it ran."""
    probe.record(sent_at, tag)
