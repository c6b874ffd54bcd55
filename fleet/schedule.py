"""The beat schedule: what runs periodically, and when (UTC)."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The periodic tasks. Each entry expires before its next run, so a backlog
    built while workers were down does not replay a pile of stale runs."""
    return {
        "cleanup-expired-sessions": {
            "task": "tasks.cleanup_expired_sessions",
            "schedule": 60.0,
            "options": {"expires": 55},
        },
        "sync-external-data": {
            "task": "tasks.sync_external_data",
            "schedule": crontab(minute=0),
            "options": {"expires": 3000},
        },
        "generate-daily-report": {
            "task": "tasks.generate_daily_report",
            "schedule": crontab(hour=0, minute=0),
            "options": {"expires": 3600 * 12},
        },
        "send-weekly-digest": {
            "task": "tasks.send_weekly_digest",
            "schedule": crontab(hour=9, minute=0, day_of_week=1),
            "options": {"expires": 3600 * 12},
        },
        "generate-monthly-report": {
            "task": "tasks.generate_monthly_report",
            "schedule": crontab(hour=0, minute=0, day_of_month=1),
            "options": {"expires": 3600 * 24},
        },
    }
