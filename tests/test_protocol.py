"""The protocol-2 check (fleet.worker.protocol) as pure logic: the corpus is classified as recorded,
and whatever the check lets through, Celery's own Request and strategy steps accept."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from celery.utils.time import timezone
from celery.worker.request import Request
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.asynchronous.timer import to_timestamp
from kombu.message import Message

from fleet.celery_app import FleetCelery
from fleet.worker.parking import _seconds_until
from fleet.worker.protocol import REASONS, _too_deep, check_message
from tests.support.hostile import Hostile, corpus, from_corpus
from tests.support.hostile_fuzz import hostile_messages

ACCEPT = {"application/json"}  # what the worker's consumer sets on each message (accept_content)


def _kombu_message(hostile: Hostile) -> Message:
    """The message as kombu hands it to the worker's task handler."""
    properties = {**hostile.properties, "message_id": hostile.tag}
    message = Message(
        body=hostile.body,
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        headers=hostile.headers or {},
        properties=properties,
        delivery_info={"exchange": "fleet", "routing_key": "default", "redelivered": False},
    )
    message.accept = ACCEPT
    return message


def _as_celery_would(app: FleetCelery, message: Message) -> None:
    """What Celery's strategy does with a message in the worker's main process, up to the pool."""
    request = Request(message, app=app, task=app.tasks[message.headers["task"]], hostname="check@test")
    hard, soft = request.time_limits  # Request.execute_using_pool
    if request.eta:
        to_timestamp(timezone.to_system(request.eta))
        _seconds_until(message.headers["eta"])  # fleet.worker.parking
    if request.expires:
        request.maybe_expire()
    assert request.id in {request.id}  # the revoked set
    pickle.dumps((request.request_dict, request.body))  # the pool sends both to a child, from the event loop
    assert isinstance(request.request_dict.get("retries", 0), int)


@pytest.mark.parametrize("entry", corpus(), ids=lambda entry: entry["name"])
def test_the_corpus_is_classified_as_recorded(entry: dict[str, Any], celery_app: FleetCelery) -> None:
    message = _kombu_message(from_corpus(entry))
    if "compression" in (message.headers or {}):
        assert message.errors, "kombu itself refuses it (FleetConsumer.on_decode_error)"
        return
    rejection = check_message(message)
    if entry["expect"] == "run" or entry.get("reason") == "unknown_task":  # the registry decides that one
        assert rejection is None
        if entry["expect"] == "run":
            _as_celery_would(celery_app, message)
    else:
        assert rejection is not None and rejection.reason == entry["reason"], rejection


@settings(max_examples=300, deadline=None, database=None)
@given(hostile=hostile_messages())
def test_what_the_check_lets_through_celery_accepts(hostile: Hostile, celery_app: FleetCelery) -> None:
    message = _kombu_message(hostile)
    rejection = check_message(message)
    if rejection is not None:
        assert rejection.reason in REASONS
    else:
        _as_celery_would(celery_app, message)


def _depth(value: Any) -> int:
    """How deep lists and objects nest in ``value``, by the definition (recursive): 0 for a scalar."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


@pytest.mark.pure
@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, limit=st.integers(min_value=1, max_value=6))
def test_the_nesting_check_says_what_the_recursive_definition_says(value: Any, limit: int) -> None:
    """The level-by-level walk (fleet.worker.protocol._too_deep) against depth > limit."""
    assert _too_deep(value, limit) == (_depth(value) > limit)
