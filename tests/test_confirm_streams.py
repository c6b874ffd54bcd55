"""fleet.confirm_streams on a real RabbitMQ: shared confirms, each request answered for its own messages."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import pytest
from kombu import Connection

from fleet.celery_app import FleetCelery
from fleet.confirm_streams import ConfirmStreams
from fleet.publish import BrokerUnavailable, Publisher, TaskMessages, publisher_for
from fleet.testing.broker import drain, queue_depth, rabbitmqctl
from tests.support.apps import app_for


def _message(app: FleetCelery, n: int) -> object:
    return TaskMessages(app)("tasks.process_data", ({"n": n},), {}, {})


def test_concurrent_requests_share_streams_and_every_message_is_queued(
    private_app: FleetCelery, private_env: dict[str, str]
) -> None:
    """32 threads x 25 publishes over 2 streams: every publish returns acked, every message is in the queue once."""
    url = private_env["CELERY_BROKER_URL"]
    streams = ConfirmStreams(publisher_for(private_app), streams=2)
    published: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for index in range(25):
            items = [_message(private_app, number * 1000 + index)]
            streams.publish(items, timeout=10)
            with lock:
                published.extend(item.task_id for item in items)  # type: ignore[attr-defined]

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(client, range(32)))
    assert len(set(published)) == 800
    assert queue_depth(url, "default") == (800, 0)
    taken = drain(url, "default")
    assert sorted(m.properties["application_headers"]["id"] for m in taken) == sorted(published)
    assert {m.properties["delivery_mode"] for m in taken} == {2}


def test_a_batch_is_answered_once_all_its_messages_are_acked(
    private_app: FleetCelery, private_env: dict[str, str]
) -> None:
    url = private_env["CELERY_BROKER_URL"]
    streams = ConfirmStreams(publisher_for(private_app), streams=1)
    items = [_message(private_app, n) for n in range(300)]
    streams.publish(items, timeout=10)
    assert queue_depth(url, "default") == (300, 0)
    assert [json.loads(m.body)[0][0]["n"] for m in drain(url, "default")] == list(range(300))


def test_an_unroutable_message_fails_its_own_request_only(
    private_app: FleetCelery, private_env: dict[str, str]
) -> None:
    """Mandatory: RabbitMQ returns a message no queue takes; that request gets outcome none, the others pass."""
    url = private_env["CELERY_BROKER_URL"]
    streams = ConfirmStreams(publisher_for(private_app), streams=1)
    streams.publish([_message(private_app, 0)], timeout=10)  # the stream's connection declared the topology
    with Connection(url) as connection:
        connection.default_channel.queue_delete("default")
    with pytest.raises(BrokerUnavailable, match="no queue") as caught:
        streams.publish([_message(private_app, 1)], timeout=10)
    assert caught.value.unknown is False
    high = TaskMessages(private_app)("tasks.process_payment", ("order-1", 1.0), {}, {})
    streams.publish([high], timeout=10)  # the same stream carries on
    assert queue_depth(url, "high_priority") == (1, 0)


def test_no_broker_answers_within_the_deadline_with_nothing_queued(private_env: dict[str, str]) -> None:
    with app_for({**private_env, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}) as app:
        streams = ConfirmStreams(Publisher(app, 1.0), streams=2)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as caught:
            streams.publish([_message(app, 0)], timeout=1.0)
        assert time.monotonic() - started < 10, "bounded by the deadline, not by a connect timeout or a hang"
        assert caught.value.unknown is False


def test_a_connection_the_broker_closed_is_replaced_with_the_same_messages(
    private_app: FleetCelery, private_env: dict[str, str]
) -> None:
    """The stream's idle connection is force-closed (as a broker restart would): the next publish still lands."""
    url = private_env["CELERY_BROKER_URL"]
    streams = ConfirmStreams(publisher_for(private_app), streams=1)
    streams.publish([_message(private_app, 0)], timeout=10)
    closed = 0
    for pid in _vhost_connections(url):
        try:
            rabbitmqctl("close_connection", pid, "test: as a broker restart would")
            closed += 1
        except subprocess.CalledProcessError:  # a short-lived connection that is gone already
            pass
    assert closed
    time.sleep(0.5)
    streams.publish([_message(private_app, 1)], timeout=10)
    assert queue_depth(url, "default") == (2, 0)


def _vhost_connections(url: str) -> list[str]:
    vhost = unquote(url.rsplit("/", 1)[1])
    out = rabbitmqctl("list_connections", "pid", "vhost", "--quiet", "--no-table-headers")
    return [line.split("\t")[0] for line in out.splitlines() if line.split("\t")[-1:] == [vhost]]
