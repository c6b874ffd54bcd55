"""The guides' first examples: a task that takes a while, and ``add``."""

from __future__ import annotations

import time
from typing import Any

from celery import Task, shared_task

from fleet.settings import Settings

#: What ``POST /run-task`` sleeps when the body names no duration (the guide's default).
DEFAULT_DURATION = 5


@shared_task(bind=True, name="tasks.long_running_task")
def long_running_task(self: Task, n: float) -> str:
    """Take ``n`` seconds, as the guide's does; bounded by the ``default`` pool's time
    limits and cancellable with ``terminate`` (the prefork child is signalled)."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0:
        raise ValueError(f"n must be a number of seconds >= 0, not {n!r}")
    time.sleep(n)
    return f"Task completed in {n} seconds"


@shared_task(name="tasks.add")
def add(x: Any, y: Any) -> Any:
    """``x + y``, the first task of every Celery guide."""
    return x + y


@shared_task(bind=True, name="tasks.my_complex_task")
def my_complex_task(self: Task) -> dict[str, Any]:
    """The guide's scheduled placeholder made small and real: count the reports and
    processed data files the fleet has written, so a run shows what accumulated."""
    settings: Settings = self.app.fleet_settings
    reports = sorted(settings.reports_dir.glob("*.csv"))
    processed = sorted((settings.data_dir / "processed").glob("*.json"))
    return {
        "status": "completed",
        "reports": len(reports),
        "report_bytes": sum(path.stat().st_size for path in reports),
        "processed": len(processed),
    }
