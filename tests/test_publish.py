"""fleet.publish on a real RabbitMQ: Celery's own messages, confirmed, and nothing sent on bad input."""

from __future__ import annotations

import json
import time

import pytest
from celery import signals
from kombu import Connection

from fleet.celery_app import FleetCelery
from fleet.publish import PublishError, TaskMessages, publish_confirmed, publish_many
from fleet.testing.broker import drain, queue_depth
from queues import declare_topology
from routing import UnknownQueueError, UnknownTaskError
from tests.support.apps import app_for

#: headers that differ between two publishes of the same call by nature
PER_MESSAGE = {"id", "root_id", "fleet_published_at", "eta", "expires"}

CALLS = [
    ("tasks.process_data", ({"rows": [1, 2, 3]},), {}, {}),
    ("tasks.process_payment", ("order-7", 12.5), {"currency": "EUR"}, {"priority": 9}),
    ("tasks.validate_data", ({"a": 1},), {}, {"queue": "reports", "countdown": 30, "expires": 600}),
    ("tasks.send_email", ("a@example.test", "hi", "body"), {}, {"time_limit": 20, "soft_time_limit": 10}),
]


def _comparable(message: object) -> dict:
    properties = dict(message.properties)  # type: ignore[attr-defined]
    headers = properties.pop("application_headers")
    correlation_id = properties.pop("correlation_id")
    expiration = properties.pop("expiration", None)
    return {
        "routing_key": message.delivery_info["routing_key"],  # type: ignore[attr-defined]
        "exchange": message.delivery_info["exchange"],  # type: ignore[attr-defined]
        "headers": {k: v for k, v in headers.items() if k not in PER_MESSAGE},
        "has_eta": headers.get("eta") is not None,
        "has_expires": headers.get("expires") is not None,
        "id_is_correlation_id": headers["id"] == correlation_id,
        "expiration_s": round(int(expiration) / 1000, -1) if expiration else None,
        "properties": properties,
        "body": json.loads(message.body),  # type: ignore[attr-defined]
    }


def test_messages_are_those_send_task_publishes(private_app: FleetCelery, private_env: dict[str, str]) -> None:
    url = private_env["CELERY_BROKER_URL"]
    ids = publish_many(private_app, CALLS)
    with private_app.producer_or_acquire() as producer:
        for name, args, kwargs, options in CALLS:
            private_app.send_task(name, args, kwargs, producer=producer, **options)
    for queue in ("default", "high_priority", "reports", "email"):
        ours, celerys = drain(url, queue)
        assert ours.properties["application_headers"]["id"] in ids
        assert _comparable(ours)["headers"] == _comparable(celerys)["headers"], queue
        assert _comparable(ours) == _comparable(celerys), queue
        assert abs(ours.properties["application_headers"]["fleet_published_at"] - time.time()) < 60


def test_a_bad_call_anywhere_in_the_batch_publishes_nothing(
    private_app: FleetCelery, private_env: dict[str, str]
) -> None:
    url = private_env["CELERY_BROKER_URL"]
    settings = private_app.fleet_settings
    with Connection(url) as connection:  # as a running fleet has it
        declare_topology(connection, settings.queue_type, settings.delivery_limit)
    good = ("tasks.process_data", ({"n": 1},), {})
    with pytest.raises(UnknownTaskError, match="tasks.nope"):
        publish_many(private_app, [good, good, ("tasks.nope", (), {}), good])
    with pytest.raises(UnknownQueueError, match="nowhere"):
        publish_many(private_app, [good, ("tasks.process_data", (), {}, {"queue": "nowhere"})])
    with pytest.raises(TypeError, match="link.*apply_async"):
        publish_many(private_app, [good, ("tasks.process_data", (), {}, {"link": "x"})])
    assert queue_depth(url, "default") == (0, 0)


def test_batch_is_confirmed_and_declares_its_queues(private_app: FleetCelery, private_env: dict[str, str]) -> None:
    """A fresh vhost with no worker yet: the queue is declared, every message waits in it."""
    url = private_env["CELERY_BROKER_URL"]
    ids = publish_many(private_app, [("tasks.process_data", ({"n": n},), {}) for n in range(2500)])
    assert len(set(ids)) == 2500
    assert queue_depth(url, "default") == (2500, 0)
    taken = drain(url, "default")
    assert [json.loads(m.body)[0][0]["n"] for m in taken] == list(range(2500))
    assert {m.properties["delivery_mode"] for m in taken} == {2}


def test_unroutable_message_fails_the_publish_instead_of_vanishing(
    private_app: FleetCelery, private_env: dict[str, str]
) -> None:
    """RabbitMQ acks a message no queue takes; mandatory publishing turns that into an error."""
    url = private_env["CELERY_BROKER_URL"]
    messages = [TaskMessages(private_app)("tasks.process_data", ({"n": 1},), {}, {})]
    with Connection(url) as connection:
        publish_confirmed(connection, messages, timeout=5)  # declares `default`
        connection.default_channel.queue_delete("default")  # kombu still remembers declaring it
        with pytest.raises(PublishError, match="no queue"):
            publish_confirmed(connection, messages, timeout=5)


def test_no_broker_is_a_publish_error(private_env: dict[str, str]) -> None:
    """After the publish retry policy's reconnects, the caller gets PublishError, not a library error."""
    with app_for({**private_env, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}) as app:
        with pytest.raises(PublishError, match="cannot connect"):
            publish_many(app, [("tasks.process_data", ({"n": 1},), {})], timeout=2)


def test_a_batch_of_many_chunks_arrives_whole_and_once(private_app: FleetCelery, private_env: dict[str, str]) -> None:
    """600 messages, written 256 per socket write (fleet.amqp_frames), every one confirmed: each arrives once,
    with the headers, properties and body it was sent with; large bodies span several AMQP frames."""
    url = private_env["CELERY_BROKER_URL"]
    build = TaskMessages(private_app)
    messages = []
    for n in range(600):
        # every 50th is larger than RabbitMQ's frame_max (128 KiB): several body frames
        text = "ü" * 70_000 if n % 50 == 0 else f"row {n} ✓"
        messages.append(build("tasks.process_data", ({"n": n, "text": text},), {}, {"priority": n % 10}))
    with Connection(url) as connection:
        connection.ensure_connection(max_retries=1)
        assert connection.connection.frame_max < len(messages[0].message.body), "a body spans several frames"
        publish_confirmed(connection, messages, timeout=30)  # raises unless all 600 are acked
    taken = drain(url, "default")
    assert len(taken) == len(messages)
    sent = {item.task_id: item.message for item in messages}
    received = {m.properties["application_headers"]["id"]: m for m in taken}
    assert received.keys() == sent.keys()
    for task_id, message in sent.items():
        got = received[task_id]
        sent_body = message.body.encode() if isinstance(message.body, str) else message.body
        assert (got.body if isinstance(got.body, bytes) else got.body.encode()) == sent_body, task_id
        assert got.properties == message.properties, task_id


def test_publish_many_of_600_is_confirmed_and_queued_once(
    private_app: FleetCelery, private_env: dict[str, str]
) -> None:
    """Through publish_many: each message queued once, with the headers and body after_task_publish announced."""
    url = private_env["CELERY_BROKER_URL"]
    announced: dict[str, tuple[dict, object]] = {}

    def record(sender: str, body: object, headers: dict, **_: object) -> None:
        announced[headers["id"]] = (headers, body)

    signals.after_task_publish.connect(record, weak=False)
    try:
        ids = publish_many(
            private_app, [("tasks.process_data", ({"n": n},), {}, {"priority": n % 10}) for n in range(600)]
        )
    finally:
        signals.after_task_publish.disconnect(record)
    assert sorted(announced) == sorted(ids)
    taken = drain(url, "default")
    assert sorted(m.properties["application_headers"]["id"] for m in taken) == sorted(ids)
    assert [json.loads(m.body)[0][0]["n"] for m in taken] == list(range(600))
    for message in taken:
        headers, body = announced[message.properties["application_headers"]["id"]]
        assert message.properties["application_headers"] == headers
        assert json.loads(message.body) == json.loads(json.dumps(body))
