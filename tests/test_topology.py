"""The declared topology on a real RabbitMQ: durable queues, dead-lettering, priorities, quorum mode."""

from __future__ import annotations

import json
import time

import pytest
from kombu import Connection, Producer

from fleet.testing.broker import Vhost, drain, rabbitmqctl
from queues import DELAY_EXCHANGE, DELAY_HEADER, DELAY_SECONDS, WORK_QUEUES, declare_topology, dlq_name


def _queues(vhost: Vhost) -> dict[str, dict]:
    rows = json.loads(
        rabbitmqctl("list_queues", "-p", vhost.name, "name", "durable", "arguments", "type", "--formatter", "json")
    )
    for row in rows:  # arguments come as [name, type, value] triples
        row["arguments"] = {name: value for name, _, value in row["arguments"]}
    return {row["name"]: row for row in rows}


@pytest.fixture
def scratch_vhost():
    vhost = Vhost().create()
    yield vhost
    vhost.delete()


def test_classic_topology_is_declared_idempotently(scratch_vhost: Vhost) -> None:
    with Connection(scratch_vhost.url) as connection:
        declare_topology(connection)
        declare_topology(connection)  # a second start changes nothing and does not fail
    queues = _queues(scratch_vhost)
    for name in WORK_QUEUES:
        arguments = queues[name]["arguments"]
        assert queues[name]["durable"] is True
        assert arguments["x-dead-letter-exchange"] == "fleet.dlx"
        assert arguments["x-dead-letter-routing-key"] == dlq_name(name)
        assert queues[dlq_name(name)]["durable"] is True
    assert queues["high_priority"]["arguments"]["x-max-priority"] == 10
    assert "x-max-priority" not in queues["email"]["arguments"]


def test_quorum_mode_declares_quorum_queues_with_a_delivery_limit(scratch_vhost: Vhost) -> None:
    with Connection(scratch_vhost.url) as connection:
        declare_topology(connection, queue_type="quorum", delivery_limit=3)
    queues = _queues(scratch_vhost)
    for name in WORK_QUEUES:
        assert queues[name]["type"] == "quorum"
        assert queues[name]["arguments"]["x-delivery-limit"] == 3
        assert queues[dlq_name(name)]["type"] == "quorum"
    for name in WORK_QUEUES:  # dead letters survive a node lost while they move (RabbitMQ >= 3.10)
        assert queues[name]["arguments"]["x-dead-letter-strategy"] == "at-least-once"
        assert queues[name]["arguments"]["x-overflow"] == "reject-publish"
    for seconds in DELAY_SECONDS:  # parked tasks are replicated too
        parked = queues[f"fleet.delay.{seconds}s"]
        assert parked["type"] == "quorum"
        assert parked["arguments"]["x-message-ttl"] == seconds * 1000
        assert parked["arguments"]["x-dead-letter-strategy"] == "at-least-once"


def test_classic_mode_keeps_its_arguments_so_existing_brokers_redeclare_cleanly(scratch_vhost: Vhost) -> None:
    with Connection(scratch_vhost.url) as connection:
        declare_topology(connection)
    parked = _queues(scratch_vhost)["fleet.delay.4s"]
    assert parked["type"] == "classic"
    assert set(parked["arguments"]) == {"x-message-ttl", "x-dead-letter-exchange"}
    assert "x-dead-letter-strategy" not in _queues(scratch_vhost)["default"]["arguments"]


def test_a_quorum_parking_queue_returns_its_message_to_the_work_queue(scratch_vhost: Vhost) -> None:
    """Message TTL and at-least-once dead-lettering together on a quorum queue (RabbitMQ >= 3.10)."""
    with Connection(scratch_vhost.url) as connection:
        declare_topology(connection, queue_type="quorum")
        Producer(connection.default_channel).publish(
            b"parked", exchange=DELAY_EXCHANGE, routing_key="default", headers={DELAY_HEADER: 4}, delivery_mode=2
        )
    deadline = time.monotonic() + 30
    returned: list = []
    while not returned and time.monotonic() < deadline:
        returned = drain(scratch_vhost.url, "default")
        time.sleep(0.2)
    assert [message.body for message in returned] == [b"parked"]
