"""Publishing tasks fast, with every message confirmed by RabbitMQ.

Celery's confirmed publish waits for RabbitMQ's ack after every message: one
round trip each, which caps a publisher far below the broker's rate. Here a
batch is written first and the acks are collected afterwards, and the call
still returns only once RabbitMQ confirmed every message.

Messages are Celery's own protocol-2 messages: :class:`TaskMessages` routes with
routing.py (through Celery's router), builds headers and body with Celery's
``as_task_v2`` and sends the ``before``/``after_task_publish`` signals, exactly
as ``apply_async`` does. What it leaves out is the per-message machinery a
batch does not need and that cost most of the time in profiles (kombu's
per-message queue declaration and producer plumbing): see docs/PERFORMANCE.md.
Plain calls only: a canvas (link, chain, chord) goes through ``apply_async``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import amqp
from celery import Celery, signals
from celery.utils.nodenames import anon_nodename
from celery.utils.time import maybe_make_aware
from kombu import Connection, Queue
from kombu.common import maybe_declare
from kombu.entity import maybe_delivery_mode
from kombu.exceptions import KombuError
from kombu.serialization import dumps

from routing import resolve_queue

#: (task name, args, kwargs) or (task name, args, kwargs, options)
Call = tuple[str, Sequence[Any], dict[str, Any]] | tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]]

#: ``apply_async`` options a plain call may carry
OPTIONS = frozenset({"queue", "priority", "countdown", "eta", "expires", "time_limit", "soft_time_limit", "task_id"})
#: the task-level defaults (``@task(priority=...)``) that apply, as in ``send_task``
_TASK_DEFAULTS = ("queue", "priority", "expires", "time_limit", "soft_time_limit")


class PublishError(Exception):
    """RabbitMQ did not confirm every message (nack, timeout or lost connection).

    Some messages of the batch may still have been queued (``published`` were
    sent): callers retry the batch and tasks stay idempotent (at-least-once,
    never at-most-once).
    """

    def __init__(self, message: str, published: int = 0) -> None:
        super().__init__(message)
        self.published = published


@dataclass(frozen=True)
class TaskMessage:
    """One task call, routed and serialized, ready for ``basic_publish``."""

    task_id: str
    name: str
    queue: Queue
    exchange: str
    routing_key: str
    body: Any
    message: amqp.Message


class TaskMessages:
    """Builds the messages ``app.send_task(name, args, kwargs, **options)`` would publish.

    Made once per batch: it reads Celery's configuration and the calling task
    (a fan-out from inside a task keeps the workflow's root and parent ids)
    once, not per message.
    """

    def __init__(self, app: Celery) -> None:
        conf = app.conf
        self.app = app
        self.celery_amqp = app.amqp
        self.tasks = app.tasks
        self._routes: dict[str, Queue] = {}
        self.serializer: str = conf.task_serializer
        self.delivery_mode: str | int = conf.task_default_delivery_mode
        self.retry_policy: dict[str, Any] = conf.task_publish_retry_policy
        self.repr_limits = (app.amqp.argsrepr_maxsize, app.amqp.kwargsrepr_maxsize)
        self.origin = anon_nodename()
        self.reply_to = app.thread_oid
        parent = app.current_worker_task
        self.parent_id = parent.request.id if parent else None
        self.root_id = (parent.request.root_id or parent.request.id) if parent else None

    def __call__(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any]
    ) -> TaskMessage:
        """One routed, serialized message; raises before anything is sent.

        ``TypeError`` for options a plain call cannot carry; routing.py's
        errors for unknown tasks or queues.
        """
        unsupported = set(options) - OPTIONS
        if unsupported:
            raise TypeError(
                f"publish options {sorted(unsupported)} need apply_async; plain calls take {sorted(OPTIONS)}"
            )
        app, celery_amqp = self.app, self.celery_amqp
        task = self.tasks.get(name)
        chosen = dict(options)
        if task is not None:
            for key in _TASK_DEFAULTS:
                if getattr(task, key, None) is not None:
                    chosen.setdefault(key, getattr(task, key))
        task_id = chosen.pop("task_id", None) or str(uuid.uuid4())
        if "queue" in chosen:  # routing.py's error names fleet's queues; Celery's would not
            resolve_queue(name, chosen["queue"])
        if chosen:
            routed = celery_amqp.router.route(chosen, name, args, kwargs, task)
            queue = routed.pop("queue")
        else:  # a plain call routes by name alone: once per name and batch
            routed = {}
            queue = self._routes.get(name) or self._routes.setdefault(
                name, celery_amqp.router.route({}, name, args, kwargs, task)["queue"]
            )
        headers, properties, body, _ = celery_amqp.as_task_v2(
            task_id,
            name,
            args,
            kwargs,
            countdown=routed.pop("countdown", None),
            eta=routed.pop("eta", None),
            expires=routed.get("expires"),
            time_limit=routed.pop("time_limit", None),
            soft_time_limit=routed.pop("soft_time_limit", None),
            reply_to=self.reply_to,
            root_id=self.root_id,
            parent_id=self.parent_id,
            origin=self.origin,
            ignore_result=None,  # as send_task leaves it: the worker applies the task's own setting
            # Arguments are JSON (no pickle), so plain repr is safe, and several times cheaper than saferepr.
            argsrepr=_clipped_repr(args, self.repr_limits[0]),
            kwargsrepr=_clipped_repr(kwargs, self.repr_limits[1]),
        )
        # As Celery does: a direct exchange's queue is reached through the default exchange.
        direct = queue.exchange.type == "direct"
        exchange, routing_key = ("", queue.name) if direct else (queue.exchange.name, queue.routing_key)
        signals.before_task_publish.send(
            sender=name,
            body=body,
            exchange=exchange,
            routing_key=routing_key,
            declare=[],
            headers=headers,
            properties=properties,
            retry_policy=self.retry_policy,
        )
        content_type, content_encoding, payload = dumps(body, serializer=self.serializer)
        ttl = _seconds_left(app, routed.get("expires"))
        if ttl is not None:  # the message expires in the queue too, as send_task has it
            properties["expiration"] = str(int(ttl * 1000))
        message = amqp.Message(
            payload,
            content_type=content_type,
            content_encoding=content_encoding,
            application_headers=headers,
            delivery_mode=maybe_delivery_mode(queue.exchange.delivery_mode or self.delivery_mode),
            priority=routed.get("priority") or 0,
            **properties,
        )
        return TaskMessage(task_id, name, queue, exchange, routing_key, body, message)


def _clipped_repr(value: Any, limit: int) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds_left(app: Celery, expires: Any) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, str):
        expires = datetime.fromisoformat(expires)
    if isinstance(expires, datetime):
        expires = (maybe_make_aware(expires) - app.now()).total_seconds()
    return max(float(expires), 0.0)


def publish_confirmed(connection: Connection, messages: Sequence[TaskMessage], timeout: float) -> None:
    """Publish ``messages`` on a fresh confirm-mode channel of ``connection``; return once all are acked.

    Each target queue is declared once per connection (kombu remembers), so a
    publisher never sends into a vhost where its queue does not exist yet, and
    messages are mandatory: one the broker could not route to any queue, which
    RabbitMQ would otherwise ack and drop, fails the publish instead. Raises
    :class:`PublishError` if any message is nacked or returned, the confirms do
    not arrive within ``timeout`` seconds, or the connection fails.
    """
    confirms = Confirms()
    try:
        channel = connection.channel()
        try:
            for queue in {id(item.queue): item.queue for item in messages}.values():
                maybe_declare(queue, channel)
            channel.confirm_select()
            channel.events["basic_ack"].add(confirms.on_ack)
            channel.events["basic_nack"].add(confirms.on_nack)
            channel.events["basic_return"].add(confirms.on_return)
            # The class's publish: a connection made with confirm_publish swaps in one that waits per message.
            publish = amqp.Channel.basic_publish
            for item in messages:
                publish(channel, item.message, exchange=item.exchange, routing_key=item.routing_key, mandatory=True)
                confirms.published += 1
                _published(item)
            _await_confirms(connection, confirms, timeout)
        finally:
            _close_quietly(channel)
    except (OSError, *connection.connection_errors, *connection.channel_errors) as exc:
        raise PublishError(
            f"publishing failed after {confirms.published} of {len(messages)} messages: {exc!r}", confirms.published
        ) from exc


def publish_one(channel: Any, item: TaskMessage, timeout: float) -> None:
    """Publish ``item`` on a channel of a ``confirm_publish`` connection; return once RabbitMQ acked it.

    One message, one round trip: the API's single-task path, on its pooled
    channels. Mandatory, as in :func:`publish_confirmed`: a returned message
    raises instead of being dropped.
    """
    channel.basic_publish(
        item.message, exchange=item.exchange, routing_key=item.routing_key, mandatory=True, confirm_timeout=timeout
    )
    _published(item)


def _published(item: TaskMessage) -> None:
    if signals.after_task_publish.receivers:
        signals.after_task_publish.send(
            sender=item.name,
            body=item.body,
            headers=item.message.application_headers,
            exchange=item.exchange,
            routing_key=item.routing_key,
        )


def publish_many(app: Celery, calls: Iterable[Call], timeout: float = 10.0) -> list[str]:
    """Publish ``calls`` and return their task ids once RabbitMQ confirmed all of them.

    Every message is built before the first is sent, so a bad call (unknown
    task or queue, unsupported option) raises and publishes nothing. Uses a
    connection from the app's pool, reconnecting as ``task_publish_retry_policy``
    allows; raises :class:`PublishError` if RabbitMQ does not confirm them all.
    """
    build = TaskMessages(app)
    messages = [build(*_with_options(call)) for call in calls]
    for attempt in (1, 2):
        with app.pool.acquire(block=True, timeout=timeout) as connection:
            try:
                _connect(connection, app.conf.task_publish_retry_policy)
                publish_confirmed(connection, messages, timeout)
                break
            except PublishError as exc:
                connection.collect()  # the pool hands out a fresh connection next time
                # A pooled connection the broker closed while idle fails before the first
                # message: that case alone is worth one more try, on a fresh connection.
                if attempt == 2 or exc.published:
                    raise
    return [item.task_id for item in messages]


def _connect(connection: Connection, retry_policy: Mapping[str, Any]) -> None:
    try:
        connection.ensure_connection(**retry_policy)
    except (OSError, KombuError, amqp.AMQPError) as exc:
        raise PublishError(f"cannot connect to the broker: {exc!r}") from exc


def _with_options(call: Call) -> tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]]:
    name, args, kwargs, *options = call
    return name, args, kwargs, options[0] if options else {}


class Confirms:
    """Tracks RabbitMQ's acks for delivery tags 1..n of one confirm-mode channel (the bench's ceiling uses it too)."""

    def __init__(self) -> None:
        self.published = 0
        self.acked: set[int] = set()
        self.acked_below = 1  # every tag below this is acked
        self.nacked = 0
        self.returned: list[str] = []

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

    def on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self.returned.append(routing_key)

    @property
    def done(self) -> bool:
        return self.acked_below > self.published


def _await_confirms(connection: Connection, confirms: Confirms, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not confirms.done and not confirms.nacked:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PublishError(
                f"RabbitMQ confirmed {confirms.acked_below - 1} of {confirms.published} messages within {timeout:g}s",
                confirms.published,
            )
        try:
            connection.drain_events(timeout=remaining)
        except TimeoutError:
            continue
    if confirms.returned:
        raise PublishError(
            f"RabbitMQ could route {len(confirms.returned)} of {confirms.published} messages to no queue "
            f"(routing keys {sorted(set(confirms.returned))}): is fleet's topology declared in this vhost?",
            confirms.published,
        )
    if confirms.nacked:
        raise PublishError(
            f"RabbitMQ refused {confirms.nacked} of {confirms.published} messages (nack)", confirms.published
        )


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - the channel may already be gone with the connection
        pass
