"""The routing table, per-call overrides, and refusal of unknown task names."""

from __future__ import annotations

import pytest

from fleet.celery_app import FleetCelery
from routing import ROUTES, UnknownQueueError, UnknownTaskError, queue_for, resolve_queue


@pytest.mark.pure
def test_routing_table() -> None:
    assert queue_for("tasks.send_email") == "email"
    assert queue_for("tasks.send_bulk_emails") == "email"
    assert queue_for("tasks.process_payment") == "high_priority"
    assert queue_for("tasks.generate_report") == "reports"
    assert queue_for("tasks.process_data") == "default"
    assert set(ROUTES.values()) <= {"email", "high_priority", "reports", "default"}


@pytest.mark.pure
def test_override_must_name_a_fleet_queue() -> None:
    assert resolve_queue("tasks.process_data", "high_priority") == "high_priority"
    with pytest.raises(UnknownQueueError, match="unknown queue 'fast'"):
        resolve_queue("tasks.process_data", "fast")


def test_celery_routes_through_the_table(celery_app: FleetCelery) -> None:
    route = celery_app.amqp.router.route({}, "tasks.send_email")
    assert route["queue"].name == "email"
    route = celery_app.amqp.router.route({"queue": "reports"}, "tasks.send_email")
    assert route["queue"].name == "reports"


def test_publishing_an_unregistered_name_is_refused(celery_app: FleetCelery) -> None:
    with pytest.raises(UnknownTaskError, match="no fleet worker registers a task named 'tasks.nope'"):
        celery_app.send_task("tasks.nope")
