"""Reports: real CSV files written under ``var/reports``."""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from fleet.progress import PROGRESS
from fleet.settings import Settings

REPORT_TYPES = ("sales", "usage", "daily", "monthly")
#: The ``parameters`` keys a report uses (any other key is kept in the result as given).
PARAMETER_BOUNDS = {"rows": (1, 1_000_000), "seed": (-(2**53), 2**53)}


def write_report(reports_dir: Path, report_type: str, rows: int, seed: int, name: str) -> dict[str, Any]:
    """Write a CSV report of ``rows`` lines; return its path, size and row count."""
    if report_type not in REPORT_TYPES:
        raise ValueError(f"unknown report type {report_type!r}; expected one of {', '.join(REPORT_TYPES)}")
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{report_type}-{name}.csv"
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "account", "quantity", "amount"])
        for line in range(rows):
            writer.writerow(
                [line, f"acct-{rng.randrange(1000):03d}", rng.randrange(1, 50), f"{rng.uniform(1, 500):.2f}"]
            )
    tmp.replace(path)  # readers never see a half-written report
    return {"report_type": report_type, "path": str(path), "size_bytes": path.stat().st_size, "rows": rows}


def report_parameters(parameters: dict[str, Any] | None, rows: int, seed: int) -> dict[str, int]:
    """``rows`` and ``seed`` as ``parameters`` set them (they win over the keyword defaults)."""
    if parameters is not None and not isinstance(parameters, dict):
        raise ValueError(f"parameters must be an object (the guide's dict), not {parameters!r}")
    chosen = {"rows": rows, "seed": seed}
    for key, (low, high) in PARAMETER_BOUNDS.items():
        value = (parameters or {}).get(key, chosen[key])
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"parameters.{key} must be a whole number from {low} to {high}, not {value!r}")
        chosen[key] = value
    return chosen


@shared_task(bind=True, name="tasks.generate_report")
def generate_report(
    self: Task, report_type: str, parameters: dict[str, Any] | None = None, rows: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Generate a ``report_type`` report (the guide's ``report_type, parameters``).

    ``parameters["rows"]`` and ``parameters["seed"]`` shape the report; the
    parameters come back in the result. PROGRESS is the guide's
    ``{status: generating|saving, percent}``. The file is named after the task id.
    """
    settings: Settings = self.app.fleet_settings
    chosen = report_parameters(parameters, rows, seed)
    self.update_state(state=PROGRESS, meta={"status": "generating", "percent": 0})
    name = self.request.id or "adhoc"
    written = write_report(settings.reports_dir, report_type, chosen["rows"], chosen["seed"], name)
    self.update_state(state=PROGRESS, meta={"status": "saving", "percent": 90})
    return {"status": "completed", **written, "file_path": written["path"], "parameters": parameters or {}}


def dated_report(settings: Settings, report_type: str, day: dt.date) -> dict[str, Any]:
    """The periodic reports: one file per period, rewritten if the period reruns."""
    return write_report(settings.reports_dir, report_type, rows=1000, seed=day.toordinal(), name=day.isoformat())
