"""An ETL pipeline as Celery canvas: a chain per source, a chord across sources."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

from celery import Task, chain, chord, group, shared_task
from celery.canvas import Signature

from fleet.settings import Settings


@shared_task(bind=True, name="tasks.fetch_data")
def fetch_data(self: Task, source_id: int, records: int = 100) -> dict[str, Any]:
    """Fetch a source's records (deterministic per source, some deliberately invalid)."""
    rng = random.Random(source_id)
    rows = [{"id": n, "value": rng.choice([None, -1.0, *[round(rng.uniform(0, 100), 2)] * 8])} for n in range(records)]
    return {"source_id": source_id, "records": rows}


@shared_task(bind=True, name="tasks.validate_data")
def validate_data(self: Task, data: dict[str, Any]) -> dict[str, Any]:
    """Drop records with a missing or negative value, counting them."""
    valid = [row for row in data["records"] if isinstance(row["value"], (int, float)) and row["value"] >= 0]
    return {**data, "records": valid, "invalid": len(data["records"]) - len(valid)}


@shared_task(bind=True, name="tasks.transform_data")
def transform_data(self: Task, data: dict[str, Any]) -> dict[str, Any]:
    """Convert values to cents and total them."""
    rows = [{**row, "cents": round(row["value"] * 100)} for row in data["records"]]
    return {**data, "records": rows, "total_cents": sum(row["cents"] for row in rows)}


@shared_task(bind=True, name="tasks.save_data")
def save_data(self: Task, data: dict[str, Any]) -> dict[str, Any]:
    """Write the source's records to ``var/data/etl/<source>.json``; return a summary."""
    settings: Settings = self.app.fleet_settings
    path = settings.data_dir / "etl" / f"{data['source_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data["records"]))
    return {
        "source_id": data["source_id"],
        "records": len(data["records"]),
        "invalid": data.get("invalid", 0),
        "total_cents": data["total_cents"],
        "path": str(path),
    }


@shared_task(bind=True, name="tasks.aggregate_results")
def aggregate_results(self: Task, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-source summaries into one."""
    return {
        "sources": sorted(result["source_id"] for result in results),
        "records": sum(result["records"] for result in results),
        "invalid": sum(result["invalid"] for result in results),
        "total_cents": sum(result["total_cents"] for result in results),
    }


def etl_pipeline(source_id: int, records: int = 100) -> Signature:
    """fetch -> validate -> transform -> save, for one source."""
    return chain(fetch_data.s(source_id, records), validate_data.s(), transform_data.s(), save_data.s())


def fetch_all(source_ids: Iterable[int], records: int = 100) -> Signature:
    """Fetch several sources in parallel."""
    return group(fetch_data.s(source_id, records) for source_id in source_ids)


def parallel_etl(source_ids: Iterable[int], records: int = 100) -> Signature:
    """One pipeline per source in parallel, then one aggregate over all of them."""
    return chord((etl_pipeline(source_id, records) for source_id in source_ids), aggregate_results.s())
