"""What a worker's Request hands its pool to run a task (fleet.worker.request).

Celery's strategy decodes every body in the worker's main process; a threaded worker's
pool thread is given that decoded body, so a task costs one JSON decode, not two. A
prefork child still gets the raw bytes through its pipe and decodes them itself.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from celery.concurrency.base import BasePool
from celery.utils.imports import symbol_by_name
from celery.worker.request import create_request_cls
from kombu.message import Message

from fleet.celery_app import FleetCelery
from fleet.testing.task_message import task_body, task_headers
from fleet.worker import limits

pytestmark = pytest.mark.pure

JSON = "application/json"


def request_for(app: FleetCelery, body: bytes, headers: dict[str, Any]) -> Any:
    """The Request Celery's strategy builds for this delivery, with the task's Request class."""
    task = app.tasks[headers["task"]]
    message = Message(
        body=body,
        content_type=JSON,
        content_encoding="utf-8",
        headers=headers,
        delivery_info={"routing_key": "default", "exchange": "tasks"},
        accept={JSON},
    )
    request_cls = create_request_cls(symbol_by_name(task.Request), task, BasePool(1), "test@host", eventer=None)
    return request_cls(message, app=app, task=task, hostname="test@host", body=message.body, headers=message.headers)


@pytest.mark.parametrize("threaded", [True, False], ids=["pool thread", "prefork child"])
def test_the_pool_gets_the_decoded_body_in_a_threaded_worker_and_the_raw_bytes_in_prefork(
    pure_app: FleetCelery, monkeypatch: pytest.MonkeyPatch, threaded: bool
) -> None:
    monkeypatch.setattr(limits, "_installed", [object()] if threaded else [])
    raw = json.dumps(task_body([2, 3])).encode()
    request = request_for(pure_app, raw, task_headers(str(uuid.uuid4()), "tasks.add", [2, 3], "test"))
    # execute_using_pool hands (name, id, request_dict, body, content_type, content_encoding) to the
    # pool; Celery's fast_trace_task decodes the body only when a content type comes with it.
    if threaded:
        assert request.content_type is None
        assert request.body == [[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    else:
        assert request.content_type == JSON
        assert request.body == raw
    assert (request.args, request.kwargs) == ([2, 3], {}), "both read the same arguments"


def test_kombus_typed_values_arrive_decoded_the_same_in_a_pool_thread(
    pure_app: FleetCelery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu's JSON turns ``{"__type__": "datetime", ...}`` into a datetime: the thread sees what a child would."""
    monkeypatch.setattr(limits, "_installed", [object()])
    stamp = {"__type__": "datetime", "__value__": "2026-12-07T03:00:00+00:00"}
    headers = task_headers(str(uuid.uuid4()), "tasks.add", [stamp, 1], "test")
    request = request_for(pure_app, json.dumps(task_body([stamp, 1])).encode(), headers)
    first = request.body[0][0]
    assert first.isoformat() == "2026-12-07T03:00:00+00:00"
