"""The worker's message handling: declare the topology on every connect, and
dead-letter what cannot run (undecodable bodies, timed-out tasks) instead of
acking it away or requeueing it forever."""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import TimeLimitExceeded
from celery import bootsteps, signals
from celery.worker.consumer import Consumer
from celery.worker.request import Request

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


class FleetRequest(Request):
    """Dead-letters a task killed by its hard time limit instead of requeueing it.

    With late acks Celery requeues a timed-out task, which would time out again,
    forever. Its FAILURE is already stored by then; the message goes to
    ``<queue>.dlq`` where an operator can see and replay it.
    """

    _timed_out = False

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # unwrap ExceptionWithTraceback
        self._timed_out = isinstance(exc, TimeLimitExceeded)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def reject(self, requeue: bool = False) -> None:
        super().reject(requeue=requeue and not self._timed_out)
