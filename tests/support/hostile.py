"""Hostile messages on a work queue: raw publishing, and accounting for every one of them.

A hostile message is published byte for byte with py-amqp (any headers, properties,
content type, encoding and body), tagged with a ``message_id`` property of its own
that RabbitMQ keeps when it dead-letters the message, so each one can be found
again: in ``<queue>.dlq``, or as a stored result if the worker ran it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import amqp
from celery import states
from kombu import Connection

from fleet.testing.task_message import task_body, task_headers
from queues import TASK_EXCHANGE, dlq_name

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "hostile_messages.json"
HEALTHY_TASK = "tasks.fetch_data"


def valid_headers(task_id: str, task: str = HEALTHY_TASK) -> dict[str, Any]:
    """The headers Celery's protocol 2 puts on a task message (celery.app.amqp.as_task_v2)."""
    return task_headers(task_id, task, (1,), "hostile@test")


VALID_BODY: list[Any] = task_body([1])


def nest(depth: int) -> list[Any]:
    """A list nested ``depth`` deep: ``[[[...]]]``."""
    nested: list[Any] = []
    for _ in range(depth - 1):
        nested = [nested]
    return nested


@dataclass
class Hostile:
    """One raw message to publish; ``tag`` finds it again."""

    name: str
    body: bytes
    headers: dict[str, Any] | None
    properties: dict[str, Any] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def task_id(self) -> Any:
        return (self.headers or {}).get("id")


def from_corpus(entry: dict[str, Any]) -> Hostile:
    """Build a corpus entry (tests/corpus/hostile_messages.json; its header says how) into a message."""
    tag = str(uuid.uuid4())
    headers: dict[str, Any] | None = valid_headers(tag, entry.get("task", HEALTHY_TASK))
    if entry.get("no_headers"):
        headers = None
    else:
        for name in entry.get("drop_headers", ()):
            headers.pop(name)
        headers.update(entry.get("headers", {}))
        if "headers_nested_depth" in entry:  # an x-nested header: one list nested that deep
            headers["x-nested"] = nest(entry["headers_nested_depth"])
    if "raw_body" in entry:
        body = entry["raw_body"].encode()
    elif "raw_body_hex" in entry:
        body = bytes.fromhex(entry["raw_body_hex"])
    elif "nested_depth" in entry:
        body = b"[" * entry["nested_depth"] + b"]" * entry["nested_depth"]
    elif "args_nested_depth" in entry:  # args: one list nested that deep
        depth = entry["args_nested_depth"]
        body = b"[" + b"[" * depth + b"]" * depth + b", {}, null]"
    else:
        body = json.dumps(entry.get("body", VALID_BODY)).encode()
    properties = {"content_type": "application/json", "content_encoding": "utf-8", **entry.get("properties", {})}
    return Hostile(entry["name"], body, headers, properties, tag)


def corpus() -> list[dict[str, Any]]:
    return json.loads(CORPUS.read_text())["messages"]


def publish(url: str, messages: list[Hostile], routing_key: str = "default") -> None:
    """Publish ``messages`` as they are, persistent, each confirmed by the broker."""
    with Connection(url) as connection:
        channel = connection.default_channel
        for hostile in messages:
            properties = {**hostile.properties, "message_id": hostile.tag, "delivery_mode": 2}
            if hostile.headers is not None:
                properties["application_headers"] = hostile.headers
            message = amqp.Message(hostile.body, **properties)
            channel.basic_publish_confirm(message, TASK_EXCHANGE.name, routing_key, confirm_timeout=10)


class DeadLetters:
    """What has reached ``<queue>.dlq`` so far, by ``message_id`` (taken off the queue as read)."""

    def __init__(self, url: str, queue: str = "default") -> None:
        self.url = url
        self.queue = dlq_name(queue)
        self.messages: dict[str, amqp.Message] = {}

    def read(self) -> dict[str, amqp.Message]:
        with Connection(self.url) as connection:
            channel = connection.default_channel
            while (message := channel.basic_get(self.queue)) is not None:
                channel.basic_ack(message.delivery_tag)
                key = message.properties.get("message_id") or (message.headers or {}).get("id")
                self.messages[str(key)] = message
        return self.messages

    def wait_for(self, tags: set[str], timeout: float = 30) -> dict[str, amqp.Message]:
        """Read until every one of ``tags`` is here (or the timeout); what is here."""
        deadline = time.monotonic() + timeout
        while not tags <= self.read().keys() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.messages


def ran(app: Any, hostile: Hostile) -> bool:
    """The worker ran (or revoked) it: a final state is stored under its id."""
    task_id = hostile.task_id
    if not isinstance(task_id, str) or not task_id:
        return False
    return app.AsyncResult(task_id).state in states.READY_STATES


def account(app: Any, dead: DeadLetters, messages: list[Hostile], timeout: float = 60) -> dict[str, str]:
    """Wait until each message is dead-lettered or has run; tag -> "dlq" | "ran". Fails on any unaccounted."""
    outcome: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        letters = dead.read()
        for hostile in messages:
            if hostile.tag in outcome:
                continue
            if hostile.tag in letters:
                outcome[hostile.tag] = "dlq"
            elif ran(app, hostile):
                outcome[hostile.tag] = "ran"
        if len(outcome) == len(messages) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lost = [f"{h.name}: {h.body[:60]!r}" for h in messages if h.tag not in outcome]
    assert not lost, f"{len(lost)} hostile messages neither dead-lettered nor run, e.g. {lost[:5]}"
    return outcome
