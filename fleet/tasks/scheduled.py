"""The periodic tasks beat sends (see ``fleet.schedule``)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from celery import Task, shared_task

from fleet.http import request_json
from fleet.messages import derived_ids
from fleet.publish import publish_many
from fleet.settings import Settings
from fleet.tasks.email import send_email
from fleet.tasks.reports import dated_report


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@shared_task(bind=True, name="tasks.cleanup_expired_sessions")
def cleanup_expired_sessions(self: Task) -> dict[str, Any]:
    """Delete task results (and the API's idempotency records kept with them) past
    ``FLEET_RESULT_EXPIRES``. Backends with native expiry (Redis) need nothing."""
    backend = self.app.backend
    backend.cleanup()
    return {"status": "cleaned", "backend": type(backend).__name__}


@shared_task(bind=True, name="tasks.sync_external_data")
def sync_external_data(self: Task) -> dict[str, Any]:
    """Fetch ``FLEET_SYNC_SOURCE_URL`` and store it as ``var/data/sync/latest.json``."""
    settings: Settings = self.app.fleet_settings
    if not settings.sync_source_url:
        return {"status": "skipped", "reason": "FLEET_SYNC_SOURCE_URL is not set"}
    _, body = request_json("GET", settings.sync_source_url, settings.http_timeout)
    path = settings.data_dir / "sync" / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return {"status": "synced", "path": str(path), "records": len(body) if isinstance(body, list) else 1}


@shared_task(bind=True, name="tasks.generate_daily_report")
def generate_daily_report(self: Task, report_type: str = "daily_summary") -> dict[str, Any]:
    """Yesterday's report; ``report_type`` is the guide's schedule kwarg, a label kept in the result."""
    day = _today() - dt.timedelta(days=1)
    written = dated_report(self.app.fleet_settings, "daily", day)
    return {**written, "report_type": report_type, "report_date": day.isoformat(), "status": "generated"}


@shared_task(bind=True, name="tasks.generate_monthly_report")
def generate_monthly_report(self: Task) -> dict[str, Any]:
    last_month = _today().replace(day=1) - dt.timedelta(days=1)
    return dated_report(self.app.fleet_settings, "monthly", last_month.replace(day=1))


@shared_task(bind=True, name="tasks.send_weekly_digest")
def send_weekly_digest(self: Task) -> dict[str, Any]:
    """Queue one digest email per ``FLEET_DIGEST_RECIPIENTS`` address on the email pool."""
    settings: Settings = self.app.fleet_settings
    week = _today().isocalendar()
    subject = f"fleet weekly digest {week.year}-W{week.week:02d}"
    body = "Your weekly digest: reports and processed data are available from the fleet API."
    ids = derived_ids(self.request.id or str(uuid.uuid4()))  # a run again republishes the same emails, each sent once
    calls = [(send_email.name, (to, subject, body), {}, {"task_id": next(ids)}) for to in settings.digest_recipients]
    task_ids = publish_many(self.app, calls)
    return {"status": "queued", "recipients": len(task_ids), "task_ids": task_ids}
