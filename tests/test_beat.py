"""Beat: the production schedule, and a real beat putting an entry into its queue."""

from __future__ import annotations

import json
import time

from celery.beat import EmbeddedService
from celery.schedules import crontab
from kombu import Connection

from fleet.celery_app import FleetCelery
from fleet.schedule import beat_schedule
from fleet.testing.broker import drain
from queues import declare_topology


def test_production_schedule() -> None:
    schedule = beat_schedule()
    assert schedule["cleanup-expired-sessions"]["schedule"] == 60.0
    assert schedule["sync-external-data"]["schedule"] == crontab(minute=0)
    assert schedule["generate-daily-report"]["schedule"] == crontab(hour=0, minute=0)
    assert schedule["send-weekly-digest"]["schedule"] == crontab(hour=9, minute=0, day_of_week=1)
    assert schedule["generate-monthly-report"]["schedule"] == crontab(hour=0, minute=0, day_of_month=1)
    assert all(entry["options"]["expires"] for entry in schedule.values())


def test_beat_puts_a_short_entry_into_its_routed_queue(private_app: FleetCelery) -> None:
    url = private_app.conf.broker_url
    with Connection(url) as connection:
        declare_topology(connection)
    private_app.conf.beat_schedule = {
        "test-report": {"task": "tasks.generate_report", "schedule": 0.5, "args": ["sales"]}
    }
    beat = EmbeddedService(private_app, thread=True)
    beat.start()
    try:
        messages: list = []
        deadline = time.monotonic() + 20
        while len(messages) < 2 and time.monotonic() < deadline:
            messages += drain(url, "reports")
            time.sleep(0.2)
    finally:
        beat.stop()
    assert len(messages) >= 2, "beat sent the entry at least twice in its queue"
    assert {message.headers["task"] for message in messages} == {"tasks.generate_report"}
    assert json.loads(messages[0].body)[0] == ["sales"]
    assert any(private_app.fleet_settings.var_dir.glob("celerybeat-schedule*")), "beat keeps its state under var/"
