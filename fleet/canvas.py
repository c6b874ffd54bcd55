"""Canvases (chain, group, chord) published through fleet's bounded publisher.

``apply_async`` on a canvas publishes through Celery's own producer pool
whatever ``producer=`` it is given: ``chain.run`` and ``chord.apply_async`` take
the producer as a named argument and do not pass it on, and a chord's
``chord_unlock`` is sent with ``apply_async`` from the result backend. That pool
retries and waits on the broker without a deadline, so a blocked RabbitMQ held
the ETL routes for minutes. Here Celery builds the canvas's messages as usual
(routing, ids, the chord's group saved in the result backend) while every
publish it makes lands in a :class:`CapturingProducer` (``FleetCelery``
hands it out from ``producer_or_acquire`` while a capture is active); the
captured messages then go out in one pipelined, confirmed, bounded publish
(:func:`fleet.publish.publish_confirmed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import amqp
from celery import Celery
from celery.canvas import Signature, group
from kombu import Producer

from fleet.messages import TaskMessage

_capture: ContextVar[CapturingProducer | None] = ContextVar("fleet_canvas_capture", default=None)


class CapturingProducer(Producer):
    """A producer that keeps what Celery publishes, as ready-to-send messages, instead of sending it."""

    def __init__(self, app: Celery) -> None:
        # An unconnected connection object: nothing here touches the network.
        super().__init__(app.connection_for_write(), auto_declare=False)
        self.messages: list[TaskMessage] = []

    def _publish(  # noqa: PLR0913 - kombu's signature
        self,
        body: Any,
        priority: Any,
        content_type: Any,
        content_encoding: Any,
        headers: Any,
        properties: Any,
        routing_key: Any,
        mandatory: Any,
        immediate: Any,
        exchange: Any,
        declare: Any,
        *_: Any,
        **__: Any,
    ) -> None:
        headers = headers or {}
        message = amqp.Message(
            body,
            priority=priority,
            content_type=content_type,
            content_encoding=content_encoding,
            application_headers=headers,
            **properties,
        )
        queue = declare[0] if declare else None
        name, task_id = str(headers.get("task", "")), str(headers.get("id", ""))
        # Celery already sent after_task_publish for it: announce=False.
        self.messages.append(TaskMessage(task_id, name, queue, exchange, routing_key, body, message, announce=False))


def captured_producer() -> CapturingProducer | None:
    """The producer ``app.producer_or_acquire(None)`` must hand out now, if a capture is active."""
    return _capture.get()


@contextmanager
def capturing(app: Celery) -> Iterator[CapturingProducer]:
    """Within this block, whatever Celery publishes for ``app`` in this thread is captured."""
    producer = CapturingProducer(app)
    token = _capture.set(producer)
    try:
        yield producer
    finally:
        _capture.reset(token)


def capture(app: Celery, signature: Signature, **options: Any) -> tuple[Any, list[TaskMessage]]:
    """``signature.apply_async(**options)``, with its messages kept for a bounded publish; (result, messages)."""
    with capturing(app) as producer:
        result = signature.apply_async(**options)
    return result, producer.messages


def fix_ids(signature: Signature, new_id: Callable[[], str]) -> None:
    """Give every task and group of a canvas its id up front (``new_id()`` per node, in a stable order).

    With ids derived from a request (an Idempotency-Key), a retried request
    rebuilds the same canvas with the same ids, and the worker runs each id once.
    """
    kind = signature.subtask_type
    if kind == "chord":
        header = signature.tasks
        if not isinstance(header, group):  # a group header carries the chord's group id in its options
            header = signature.kwargs["header"] = group(list(header), app=signature.app)
        header.options.setdefault("task_id", new_id())
        for task in header.tasks:
            fix_ids(task, new_id)
        fix_ids(signature.body, new_id)
    elif kind in ("chain", "group"):
        if kind == "group":
            signature.options.setdefault("task_id", new_id())
        for task in signature.tasks:
            fix_ids(task, new_id)
    else:
        signature.options.setdefault("task_id", new_id())
