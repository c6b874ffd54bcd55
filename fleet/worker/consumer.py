"""The worker's message handling: declare the topology on every connect, and
dead-letter what cannot run (malformed or undecodable messages, unknown and
timed-out tasks) instead of acking it away, requeueing it forever, or letting it
stop the worker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from billiard.exceptions import TimeLimitExceeded
from celery import bootsteps, signals
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from vine import promise

from fleet.worker.protocol import MessageRejected, check_message
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
    """Celery's consumer, made to survive any message.

    Every message is checked against the protocol-2 shape (fleet.worker.protocol) before
    Celery's strategy sees it, and whatever still raises while handling one message
    dead-letters that message: an exception escaping the handler would stop the
    consumer's blueprint, i.e. the whole worker ("Unrecoverable error"), and the
    message would come back to kill the next one. Each rejection is logged with its
    reason and counted (``task_rejected`` carries a MessageRejected).
    """

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], None]:
        handle = super().create_task_handler(promise)
        # A lost connection must still reach the blueprint (it reconnects); a broken channel
        # cannot dead-letter anything, so it goes there too.
        broker_errors = (*self.connection_errors, *self.channel_errors)

        def on_task_received(message: Any) -> None:
            try:
                rejection = check_message(message)
                if rejection is not None:
                    self.dead_letter(message, rejection)
                    return
                handle(message)
            except broker_errors:
                raise
            except Exception as exc:  # noqa: BLE001 - the last resort: one message never stops the worker
                logger.exception("handling a message raised; dead-lettering it")
                self.dead_letter(message, MessageRejected("error", f"handling it raised {exc!r}"))

        return on_task_received

    def dead_letter(self, message: Any, rejection: MessageRejected) -> None:
        """Reject ``message`` into ``<queue>.dlq`` (unless already done) and report why."""
        if not message.acknowledged:
            message.reject(requeue=False)
        signals.task_rejected.send(sender=self, message=message, exc=rejection)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """Celery acks undecodable bodies (they are lost); reject them to the dead-letter queue.

        kombu calls this from its own ``except`` block, outside the task handler's guard.
        """
        try:
            self.dead_letter(message, MessageRejected("undecodable", repr(exc)))
        except Exception:  # noqa: BLE001 - nothing more can be done for it here
            logger.exception("could not dead-letter an undecodable message")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self.dead_letter(message, MessageRejected("headers", "not a Celery task message"))

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self.dead_letter(message, MessageRejected("invalid", repr(exc)))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Celery's handling (rejects it, stores a NotRegistered FAILURE for whoever waits), counted."""
        try:
            super().on_unknown_task(body, message, exc)
        except Exception:  # noqa: BLE001 - the result store may be down; the message is dead-lettered below
            logger.exception("could not store the failure of an unknown task")
        name = message.headers["task"]
        self.dead_letter(message, MessageRejected("unknown_task", f"task {name!r} is not registered"))


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
