"""The declared topology on a real RabbitMQ: durable queues, dead-lettering, priorities, quorum mode."""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest
from click.testing import CliRunner
from kombu import Connection, Producer

from fleet.cli import main
from fleet.testing.broker import Vhost, drain, rabbitmqctl
from queues import (
    DELAY_EXCHANGE,
    DELAY_HEADER,
    DELAY_SECONDS,
    TASK_EXCHANGE,
    WORK_QUEUES,
    declare_topology,
    dlq_name,
    topology,
)


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


def test_the_printed_backlog_policy_makes_every_fleet_queue_and_only_those_lazy(scratch_vhost: Vhost) -> None:
    """What an operator runs: the command ``fleet queue policy`` prints, on the broker URL's vhost."""
    printed = CliRunner().invoke(main, ["queue", "policy"], env={"CELERY_BROKER_URL": scratch_vhost.url})
    assert printed.exit_code == 0, printed.output
    command = shlex.split(printed.output)
    assert command[:2] == ["rabbitmqctl", "set_policy"] and command[command.index("-p") + 1] == scratch_vhost.name
    with Connection(scratch_vhost.url, transport_options={"confirm_publish": True}) as connection:
        declare_topology(connection)
        channel = connection.default_channel
        for stranger in ("celery", "default.extra", "xdefault"):  # near-misses keep the broker's default mode
            channel.queue_declare(stranger, durable=True, auto_delete=False)
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        producer = Producer(channel)
        for index in range(200):
            producer.publish({"i": index}, exchange=TASK_EXCHANGE, routing_key="default", delivery_mode=2)
            producer.publish({"i": index}, exchange="", routing_key="celery", delivery_mode=2)
        version = connection.connection.server_properties["version"]
    rows = json.loads(
        rabbitmqctl("list_queues", "-p", scratch_vhost.name, "name", "policy", "messages", "messages_ram",
                    "--formatter", "json")
    )  # fmt: skip
    queues = {row["name"]: row for row in rows}
    assert {name for name, row in queues.items() if row["policy"] == "fleet-backlog"} == {q.name for q in topology()}
    assert not any(queues[stranger]["policy"] for stranger in ("celery", "default.extra", "xdefault"))
    assert queues["default"]["messages"] == queues["celery"]["messages"] == 200
    if tuple(int(part) for part in version.split(".")[:2]) < (3, 12):  # later brokers ignore the mode
        assert queues["default"]["messages_ram"] == 0  # the backlog waits on disk
        assert queues["celery"]["messages_ram"] == 200  # the default mode holds it in memory
    assert sorted(json.loads(message.body)["i"] for message in drain(scratch_vhost.url, "default")) == list(range(200))
