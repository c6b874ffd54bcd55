"""PROGRESS state for long tasks, in one shape the API and dashboards rely on."""

from __future__ import annotations

from typing import Any

from celery import Task

PROGRESS = "PROGRESS"


def report_progress(task: Task, current: int, total: int, **extra: Any) -> dict[str, Any]:
    """Store ``{current, total, percent, ...}`` as the task's PROGRESS state."""
    meta = {"current": current, "total": total, "percent": round(100 * current / total, 1) if total else 100.0, **extra}
    task.update_state(state=PROGRESS, meta=meta)
    return meta
