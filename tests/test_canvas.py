"""Canvases captured from ``apply_async`` for the bounded publisher (fleet.canvas): as Celery sends them, ids fixed."""

from __future__ import annotations

import json

from fleet.canvas import capture, fix_ids
from fleet.celery_app import FleetCelery
from fleet.messages import derived_ids
from fleet.tasks.workflows import etl_pipeline, parallel_etl


def test_a_chain_is_captured_as_its_first_message_carrying_the_rest(celery_app: FleetCelery) -> None:
    result, messages = capture(celery_app, etl_pipeline(7, 3))
    assert [(m.name, m.routing_key, m.queue.name) for m in messages] == [("tasks.fetch_data", "default", "default")]
    headers = messages[0].message.application_headers
    assert headers["id"] == messages[0].task_id and headers["root_id"] == messages[0].task_id
    chain = json.loads(messages[0].message.body)[2]["chain"]  # protocol 2 body: (args, kwargs, embed)
    assert [step["task"] for step in chain] == ["tasks.save_data", "tasks.transform_data", "tasks.validate_data"]
    assert result.id == chain[0]["options"]["task_id"]  # the workflow's result is its last step's


def test_fixed_ids_make_a_rebuilt_canvas_identical(celery_app: FleetCelery) -> None:
    def build() -> tuple[str, list[tuple[str, str]]]:
        ids = derived_ids("key\0request")
        signature = parallel_etl([1, 2, 3], 5)
        fix_ids(signature, lambda: next(ids))
        result, messages = capture(celery_app, signature)
        return result.id, [(m.name, m.task_id) for m in messages]

    first, again = build(), build()
    assert first[0] == again[0]  # the chord's result id
    header = [pair for pair in first[1] if pair[0] == "tasks.fetch_data"]
    assert len(header) == 3 and header == [pair for pair in again[1] if pair[0] == "tasks.fetch_data"]
    # Celery's own chord_unlock poller is the one message with a fresh id; its target is the fixed body.
    assert [name for name, _ in first[1]].count("celery.chord_unlock") == 1
