"""Data processing: a multi-step job that reports which step it is on."""

from __future__ import annotations

import json
import random
import statistics
import time
from typing import Any

from celery import Task, shared_task

from fleet.progress import report_progress
from fleet.settings import Settings

STEPS = ("load", "clean", "analyze", "store")


@shared_task(bind=True, name="tasks.process_data")
def process_data(self: Task, data_id: int, rows: int = 10_000, step_delay: float = 0.0) -> dict[str, Any]:
    """Load ``rows`` samples for ``data_id``, clean, analyze and store them.

    Reports PROGRESS ``{current, total, percent, step}`` as each step starts.
    ``step_delay`` stands in for the I/O a real step waits on (seconds per step).
    Deterministic per ``data_id``, so a redelivered run writes the same file.
    """
    settings: Settings = self.app.fleet_settings
    samples: list[float] = []
    summary: dict[str, Any] = {}
    for number, step in enumerate(STEPS):
        report_progress(self, number, len(STEPS), step=step)
        time.sleep(step_delay)
        if step == "load":
            rng = random.Random(data_id)
            samples = [rng.gauss(100, 25) for _ in range(rows)]
        elif step == "clean":
            samples = [value for value in samples if value >= 0]
        elif step == "analyze":
            summary = {
                "count": len(samples),
                "mean": round(statistics.fmean(samples), 4) if samples else None,
                "stdev": round(statistics.pstdev(samples), 4) if samples else None,
                "min": round(min(samples), 4) if samples else None,
                "max": round(max(samples), 4) if samples else None,
            }
        else:
            path = settings.data_dir / "processed" / f"{data_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"data_id": data_id, **summary}))
            summary["path"] = str(path)
    return {"data_id": data_id, "status": "processed", "steps": list(STEPS), **summary}
