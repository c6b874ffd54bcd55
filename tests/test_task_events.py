"""With FLEET_TASK_EVENTS=1 every published task is announced by one ``task-sent`` event, as
``send_task`` announces it: through the API (fleet's pipelined publisher) and through Celery's
own ``send_task`` alike, seen by Celery's event receiver on a private vhost."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import NotFound, ResourceLocked

from fleet.celery_app import FleetCelery
from tests.support.api import ApiServer
from tests.support.apps import app_for


class SentEvents:
    """Celery's event receiver, capturing ``task-sent`` in a thread; ready once its queue is bound."""

    def __init__(self, app: FleetCelery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.connection = app.connection_for_read()
        self.receiver = app.events.Receiver(self.connection, handlers={"task-sent": self.events.append})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        while not self.stop.is_set():
            try:
                self.receiver.capture(limit=None, timeout=0.5, wakeup=False)
            except TimeoutError:
                continue

    def start(self) -> SentEvents:
        self.thread.start()
        deadline = time.monotonic() + 30
        while True:  # no event may be missed: publish only once the receiver's queue exists
            try:
                with self.app.connection_for_read() as probe:
                    probe.default_channel.queue_declare(self.receiver.queue.name, passive=True)
                return self
            except ResourceLocked:  # exclusive to the receiver's connection: it exists
                return self
            except NotFound:
                assert time.monotonic() < deadline, "the event receiver never bound its queue"
                time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.receiver.should_stop = True
        self.thread.join(10)
        self.connection.release()

    def wait_for(self, ids: set[str], timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not ids <= {event["uuid"] for event in self.events}:
            assert time.monotonic() < deadline, f"missing task-sent for {ids - {e['uuid'] for e in self.events}}"
            time.sleep(0.05)
        return list(self.events)


@pytest.fixture
def evented(private_env: dict[str, str], log_dir: Path) -> Iterator[tuple[ApiServer, FleetCelery, SentEvents]]:
    env = {**private_env, "FLEET_TASK_EVENTS": "1"}
    api = ApiServer(env, log_dir).start()
    with app_for(env) as app:
        events = SentEvents(app).start()
        try:
            yield api, app, events
        finally:
            events.close()
            api.stop()


def test_api_and_send_task_each_send_one_task_sent_event(evented: tuple[ApiServer, FleetCelery, SentEvents]) -> None:
    api, app, events = evented
    one = api.post("/api/tasks", {"task": "tasks.process_data", "args": [7], "kwargs": {"rows": 3}})
    assert one.status_code == 202, one.text
    batch = api.post("/api/tasks/batch", {"tasks": [{"task": "tasks.generate_report", "args": ["sales"]}] * 2})
    assert batch.status_code == 202, batch.text
    via_api = [one.json()["task_id"], *[t["task_id"] for t in batch.json()["tasks"]]]
    via_celery = app.send_task("tasks.fetch_data", (1,)).id
    last = api.post("/api/tasks", {"task": "tasks.fetch_data", "args": [2]}).json()["task_id"]

    seen = events.wait_for({*via_api, via_celery, last})
    counts = Counter(event["uuid"] for event in seen)
    assert [counts[task_id] for task_id in (*via_api, via_celery)] == [1, 1, 1, 1], "one event per task, never two"
    by_id = {event["uuid"]: event for event in seen}
    first = by_id[via_api[0]]
    assert first["name"] == "tasks.process_data" and first["args"] == "[7]" and first["kwargs"] == "{'rows': 3}"
    assert (first["queue"], first["routing_key"]) == ("default", "default")
    assert first["hostname"] and first["timestamp"] and first["retries"] == 0
    assert [by_id[task_id]["queue"] for task_id in via_api[1:]] == ["reports", "reports"]
    assert by_id[via_celery]["name"] == "tasks.fetch_data" and by_id[via_celery]["queue"] == "default"
