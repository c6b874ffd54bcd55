"""Messages a worker cannot run are dead-lettered and logged, never silently lost,
and the worker keeps consuming."""

from __future__ import annotations

import pickle
import time
import uuid

import pytest
from kombu import Connection, Producer

from fleet.celery_app import FleetCelery
from fleet.settings import Settings
from fleet.testing.broker import drain
from fleet.testing.processes import FleetProcess
from queues import TASK_EXCHANGE

pytestmark = pytest.mark.usefixtures("fleet_workers")


def _publish_raw(url: str, task: str, body: bytes, content_type: str) -> str:
    task_id = str(uuid.uuid4())
    with Connection(url) as connection:
        Producer(connection.default_channel).publish(
            body,
            exchange=TASK_EXCHANGE,
            routing_key="default",
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
            headers={"task": task, "id": task_id, "lang": "py", "retries": 0, "root_id": task_id},
            delivery_mode=2,
        )
    return task_id


def test_unknown_pickled_and_malformed_messages_are_dead_lettered(
    celery_app: FleetCelery, settings: Settings, fleet_workers: dict[str, FleetProcess]
) -> None:
    url = settings.broker_url
    bad = {
        "unknown task": _publish_raw(url, "tasks.nope", b'[[], {}, {"callbacks": null}]', "application/json"),
        "pickle": _publish_raw(url, "tasks.fetch_data", pickle.dumps(((1,), {}, {})), "application/x-python-serialize"),
        "malformed json": _publish_raw(url, "tasks.fetch_data", b"{not json", "application/json"),
    }
    dead: dict[str, object] = {}
    deadline = time.monotonic() + 30
    while len(dead) < len(bad) and time.monotonic() < deadline:
        dead.update({message.headers["id"]: message for message in drain(url, "default.dlq")})
        time.sleep(0.2)
    for kind, task_id in bad.items():
        assert task_id in dead, f"the {kind} message was not dead-lettered"
        assert dead[task_id].headers["x-death"][0]["reason"] == "rejected"
    log = fleet_workers["default"].log()
    for kind, task_id in bad.items():
        assert task_id in log, f"the {kind} message was not logged"
    # The worker is still consuming.
    assert celery_app.send_task("tasks.fetch_data", (5, 3)).get(timeout=30)["source_id"] == 5
