"""The worker declares fleet's whole topology (queues.py) every time it connects."""

from __future__ import annotations

from celery import bootsteps
from celery.worker.consumer import Consumer

from queues import declare_topology


class DeclareTopology(bootsteps.StartStopStep):
    """Declare every exchange, work queue and dead-letter queue once connected.

    Dead-letter queues must exist before the first reject, or RabbitMQ drops
    the dead letter; they are declared here because no worker consumes them.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Consumer) -> None:
        settings = c.app.fleet_settings
        declare_topology(c.connection, settings.queue_type, settings.delivery_limit)
