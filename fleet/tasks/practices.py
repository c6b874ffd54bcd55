"""The guide's production best practices, each a small task that does real work.

Idempotent updates keep records as JSON files under ``var/data/records``; the
rest compute their answers from the data they are given, so a test can check them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from fleet.settings import Settings

logger = logging.getLogger(__name__)


def record_path(settings: Settings, record_id: int | str) -> Path:
    name = str(record_id)
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise ValueError(f"record_id must be 1 to 64 letters, digits, '-' or '_', not {record_id!r}")
    return settings.data_dir / "records" / f"{name}.json"


@shared_task(bind=True, name="tasks.idempotent_update")
def idempotent_update(self: Task, record_id: int | str, new_value: Any) -> dict[str, Any]:
    """Set a record's value; running it again with the same value changes nothing
    and says ``already_updated`` (the check the guide sketches against a database)."""
    path = record_path(self.app.fleet_settings, record_id)
    if path.exists() and json.loads(path.read_text())["value"] == new_value:
        return {"status": "already_updated", "record_id": record_id, "value": new_value}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"record_id": record_id, "value": new_value}))
    tmp.replace(path)  # atomic: a concurrent reader sees the old or the new record, never half of one
    return {"status": "updated", "record_id": record_id, "value": new_value}


@shared_task(name="tasks.focused_task")
def process_single_item(item_id: int | str) -> dict[str, Any]:
    """Process one item: its stable SHA-256 fingerprint (small and focused)."""
    digest = hashlib.sha256(str(item_id).encode()).hexdigest()
    return {"item_id": item_id, "status": "processed", "fingerprint": digest}


def summarise(data: Any) -> dict[str, Any]:
    """What the priority tasks report about their input: its kind and JSON size."""
    return {"kind": type(data).__name__, "size_bytes": len(json.dumps(data))}


@shared_task(name="tasks.high_priority")
def high_priority_task(data: Any) -> dict[str, Any]:
    """Routed to ``high_priority`` (the guide's ``queue='high_priority'``)."""
    return {"status": "completed", **summarise(data)}


@shared_task(name="tasks.low_priority")
def low_priority_task(data: Any) -> dict[str, Any]:
    """The guide's ``low_priority`` queue is not in fleet's topology: its ``tasks.*`` route runs it on ``default``."""
    return {"status": "completed", **summarise(data)}


@shared_task(name="tasks.time_limited", time_limit=300, soft_time_limit=240)
def time_limited_task(data: dict[str, Any]) -> dict[str, Any]:
    """Run ``data["steps"]`` steps of ``data["step_seconds"]`` each under the guide's
    limits (soft 240 s, hard 300 s); at the soft limit, stop and report the steps done."""
    steps, step_seconds = int(data.get("steps", 1)), float(data.get("step_seconds", 0))
    done = 0
    try:
        for _ in range(steps):
            time.sleep(step_seconds)
            done += 1
    except SoftTimeLimitExceeded:
        logger.warning("Task approaching time limit, saving progress")
        return {"status": "partial", "message": "Time limit reached", "steps_done": done, "steps": steps}
    return {"status": "completed", "steps_done": done, "steps": steps}


def perform_operation(data: Any) -> dict[str, Any]:
    """Total ``data["values"]``; a ValueError names what is wrong with the input."""
    values = data.get("values") if isinstance(data, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError("data must be an object whose 'values' is a list of numbers")
    return {"count": len(values), "total": sum(values)}


@shared_task(name="tasks.graceful_failure")
def graceful_failure_task(data: Any) -> dict[str, Any]:
    """A known error is an answer, not a retry; a connection error is raised for Celery to handle."""
    try:
        return {"status": "success", "result": perform_operation(data)}
    except ValueError as exc:
        logger.error("Validation error: %s", exc)
        return {"status": "failed", "error": str(exc), "retry": False}
    except ConnectionError:
        logger.warning("Connection error", exc_info=True)
        raise
    except Exception:  # noqa: BLE001 - the guide's pattern: log, answer failed, never leak internals
        logger.exception("Unexpected error in task")
        return {"status": "failed", "error": "Internal error"}
