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

#: The guide's step names, in its order.
STEPS = ("validating", "transforming", "analyzing", "saving")
#: Seconds each step waits by default: the guide's ``time.sleep(1)``, so PROGRESS is visible to a poller.
STEP_DELAY = 1.0


@shared_task(bind=True, name="tasks.process_data")
def process_data(self: Task, data_id: int, rows: int = 10_000, step_delay: float = STEP_DELAY) -> dict[str, Any]:
    """Load and validate ``rows`` samples for ``data_id``, transform, analyze and save them.

    Reports PROGRESS ``{step, current, total, percent}`` as each step starts
    (``current`` counts from 1, as the guide's does). ``step_delay`` stands in
    for the I/O a real step waits on (seconds per step; 0 to run flat out).
    Deterministic per ``data_id``, so a redelivered run writes the same file.
    """
    settings: Settings = self.app.fleet_settings
    samples: list[float] = []
    summary: dict[str, Any] = {}
    for number, step in enumerate(STEPS):
        report_progress(self, number + 1, len(STEPS), step=step)
        time.sleep(step_delay)
        if step == "validating":
            rng = random.Random(data_id)
            samples = [rng.gauss(100, 25) for _ in range(rows)]
        elif step == "transforming":
            samples = [value for value in samples if value >= 0]
        elif step == "analyzing":
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
    return {"status": "completed", "data_id": data_id, "steps_completed": len(STEPS), "steps": list(STEPS), **summary}
