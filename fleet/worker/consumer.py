"""The worker's consumer: dead-letter what cannot run (malformed or undecodable
messages, unknown tasks) instead of acking it away, requeueing it forever, or
letting it stop the worker.

It also leaves out Celery 5.5+'s native delayed delivery bootstep, included
whenever a quorum queue is configured: it sets up its exchanges on every URL of
a failover list one after the other, retrying a dead one (about 18 s with the
first node dead) before the worker consumes. fleet never uses it: Celery routes
countdowns through it only for non-direct exchanges (fleet's is direct), and
far-future ETAs park in ``fleet.delay.*`` queues (fleet.worker.parking).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer
from kombu.message import Message
from vine import promise

from fleet.read_ahead import ReadAheadTCPTransport, read_buffered_frames
from fleet.worker.protocol import MessageRejected, check_message

logger = logging.getLogger("fleet.consumer")

NATIVE_DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class FleetConsumer(Consumer):
    """Celery's consumer, made to survive any message.

    Every message is checked against the protocol-2 shape (fleet.worker.protocol) before
    Celery's strategy sees it, and whatever still raises while handling one message
    dead-letters that message: an exception escaping the handler would stop the
    consumer's blueprint, i.e. the whole worker ("Unrecoverable error"), and the
    message would come back to kill the next one. Each rejection is logged with its
    reason and counted (``task_rejected`` carries a MessageRejected).
    """

    class Blueprint(Consumer.Blueprint):
        default_steps = [step for step in Consumer.Blueprint.default_steps if step != NATIVE_DELAYED_DELIVERY]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: list[Callable[[], Any]] = []  # due, not yet written (call_soon_ack)
        self._acks_lock = threading.Lock()  # pool threads add, the event loop writes

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

    def register_with_event_loop(self, hub: Any) -> None:
        super().register_with_event_loop(hub)
        # Frames a blocking read took ahead would otherwise wait for the socket's next bytes.
        hub.on_tick.add(self._read_buffered_frames)

    def _read_buffered_frames(self) -> None:
        if self.connection is not None:
            read_buffered_frames(self.connection)

    def call_soon_ack(self, p: Any, *args: Any, **kwargs: Any) -> Any:
        """Acks that come due in one turn of the event loop are written together: one ``sendall``
        for all of them (fleet.read_ahead), not one each. Each is still its own ``basic.ack``,
        written in the same loop turn as before; rejects keep Celery's path."""
        if self.hub is None or getattr(p, "__func__", None) is not Message.ack_log_error:
            return super().call_soon_ack(p, *args, **kwargs)
        with self._acks_lock:
            self._acks.append(partial(p, *args, **kwargs))
            first = len(self._acks) == 1
        if first:
            self.hub.call_soon(self._write_acks)
        return None

    def _write_acks(self) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        transport = getattr(getattr(self.connection, "connection", None), "transport", None)
        try:
            with transport.corked() if isinstance(transport, ReadAheadTCPTransport) else nullcontext():
                for ack in acks:
                    ack()  # kombu's ack_log_error: a dead channel is logged, not raised
        except self.connection_errors as exc:  # the corked write: the connection died under it
            logger.critical("could not write %d acks: %r (RabbitMQ redelivers them)", len(acks), exc)

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
