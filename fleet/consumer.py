"""The worker's consumer: declares the topology on every connect and
dead-letters messages Celery cannot decode instead of acking them away."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps, signals
from celery.worker.consumer import Consumer

from queues import declare_topology

logger = logging.getLogger("fleet.consumer")


class DeclareTopology(bootsteps.StartStopStep):
    """Declare every exchange, work queue and dead-letter queue once connected.

    Dead-letter queues must exist before the first reject, or RabbitMQ drops
    the dead letter; they are declared here because no worker consumes them.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Consumer) -> None:
        settings = c.app.fleet_settings
        declare_topology(c.connection, settings.queue_type, settings.delivery_limit)


class FleetConsumer(Consumer):
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """Celery acks undecodable bodies (they are lost); reject them to the dead-letter queue."""
        logger.error(
            "cannot decode message (content_type=%s, headers=%r): %r; dead-lettering it",
            message.content_type,
            message.headers,
            exc,
        )
        message.reject(requeue=False)
        signals.task_rejected.send(sender=self, message=message, exc=exc)
