"""RabbitMQ helpers for tests: a private vhost per run, and raw queue access."""

from __future__ import annotations

import subprocess
import uuid
from urllib.parse import quote

from kombu import Connection

from queues import Policy


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


class Vhost:
    """A RabbitMQ vhost of this test run's own, removed with everything in it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.name = f"fleet-test-{uuid.uuid4().hex[:10]}"
        self.url = f"amqp://guest:guest@{host}:{port}/{quote(self.name, safe='')}"

    def create(self) -> Vhost:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def set_policy(self, policy: Policy) -> Vhost:
        rabbitmqctl(*policy.rabbitmqctl_args(self.name))
        return self

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


def queue_depth(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, by a passive declare."""
    with Connection(url) as connection:
        _, messages, consumers = connection.default_channel.queue_declare(queue, passive=True)
        return messages, consumers


def drain(url: str, queue: str, limit: int = 10_000) -> list:
    """Take (and ack) every ready message of ``queue``; return them."""
    taken = []
    with Connection(url) as connection:
        channel = connection.default_channel
        while len(taken) < limit:
            message = channel.basic_get(queue)
            if message is None:
                break
            channel.basic_ack(message.delivery_tag)
            taken.append(message)
    return taken
