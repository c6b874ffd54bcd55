"""Publishing many tasks at once with pipelined publisher confirms.

Celery's confirmed publish waits for RabbitMQ's ack after every message: one
round trip each, which caps a publisher far below the broker's rate. Here the
whole batch is written first and the acks are collected afterwards, and the
call still returns only once RabbitMQ confirmed every message. Messages are
built by Celery itself (``send_task`` with our producer), so routing, headers
and signals are exactly those of ``apply_async``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery
from kombu import Producer

#: (task name, args, kwargs) or (task name, args, kwargs, options)
Call = tuple[str, Sequence[Any], dict[str, Any]] | tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]]


class PublishError(Exception):
    """RabbitMQ did not confirm every message (nack, timeout or lost connection).

    Some messages of the batch may still have been queued: callers retry the
    batch and tasks stay idempotent (at-least-once, never at-most-once).
    """


class _Confirms:
    """Tracks RabbitMQ's acks for delivery tags 1..n of one confirm-mode channel."""

    def __init__(self) -> None:
        self.published = 0
        self.acked: set[int] = set()
        self.acked_below = 1  # every tag below this is acked
        self.nacked = 0

    def on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.acked_below = max(self.acked_below, tag + 1)
        else:
            self.acked.add(tag)
        while self.acked_below in self.acked:
            self.acked.discard(self.acked_below)
            self.acked_below += 1

    def on_nack(self, tag: int, multiple: bool) -> None:
        self.nacked += 1

    @property
    def done(self) -> bool:
        return self.acked_below > self.published


def publish_many(app: Celery, calls: Iterable[Call], timeout: float = 10.0) -> list[str]:
    """Publish ``calls`` and return their task ids once RabbitMQ confirmed all of them.

    Raises :class:`PublishError` if any message is nacked or the confirms do
    not arrive within ``timeout`` seconds.
    """
    confirms = _Confirms()
    task_ids: list[str] = []
    with app.connection_for_write() as connection:
        channel = connection.channel()
        try:
            channel.confirm_select()
            # py-amqp swaps in a publish that waits for each ack; use the plain one.
            channel.basic_publish = channel._basic_publish
            channel.events["basic_ack"].add(confirms.on_ack)
            channel.events["basic_nack"].add(confirms.on_nack)
            producer = Producer(channel, auto_declare=False)
            for call in calls:
                name, args, kwargs, options = (*call, {})[:4]
                task_id = str(uuid.uuid4())
                app.send_task(name, args, kwargs, task_id=task_id, producer=producer, retry=False, **options)
                task_ids.append(task_id)
                confirms.published += 1
            _await_confirms(connection, confirms, timeout)
        except (OSError, connection.connection_errors) as exc:  # type: ignore[misc]
            raise PublishError(f"publishing failed after {confirms.published} messages: {exc!r}") from exc
        finally:
            try:
                channel.close()
            except Exception:  # noqa: BLE001 - the channel may already be gone with the connection
                pass
    return task_ids


def _await_confirms(connection: Any, confirms: _Confirms, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not confirms.done and not confirms.nacked:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PublishError(
                f"RabbitMQ confirmed {confirms.acked_below - 1} of {confirms.published} messages within {timeout:g}s"
            )
        try:
            connection.drain_events(timeout=remaining)
        except TimeoutError:
            continue
    if confirms.nacked:
        raise PublishError(f"RabbitMQ refused {confirms.nacked} of {confirms.published} messages (nack)")
