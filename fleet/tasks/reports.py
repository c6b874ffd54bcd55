"""Reports: real CSV files written under ``var/reports``."""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from fleet.settings import Settings

REPORT_TYPES = ("sales", "usage", "daily", "monthly")


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


@shared_task(bind=True, name="tasks.generate_report")
def generate_report(self: Task, report_type: str, rows: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Generate a ``report_type`` report; the file is named after the task id."""
    settings: Settings = self.app.fleet_settings
    return write_report(settings.reports_dir, report_type, rows, seed, name=self.request.id or "adhoc")


def dated_report(settings: Settings, report_type: str, day: dt.date) -> dict[str, Any]:
    """The periodic reports: one file per period, rewritten if the period reruns."""
    return write_report(settings.reports_dir, report_type, rows=1000, seed=day.toordinal(), name=day.isoformat())
