"""Celery task messages, built the way ``send_task`` builds them, ready for a pipelined publish.

:class:`TaskMessages` routes with routing.py (through Celery's router), builds
headers and body with Celery's ``as_task_v2`` and sends the
``before_task_publish`` signal, exactly as ``apply_async`` does. What it leaves
out is the per-message machinery a batch does not need and that cost most of
the time in profiles (kombu's per-message queue declaration and producer
plumbing): see docs/PERFORMANCE.md. Plain calls only; a canvas is captured from
``apply_async`` instead (:mod:`fleet.canvas`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import amqp
from celery import Celery, signals
from celery.utils.nodenames import anon_nodename
from celery.utils.time import maybe_make_aware
from kombu import Queue
from kombu.entity import maybe_delivery_mode
from kombu.exceptions import EncodeError
from kombu.serialization import dumps
from kombu.utils.json import JSONEncoder

from routing import resolve_queue

#: namespace of task ids derived from a seed (an Idempotency-Key, a parent task's id)
DERIVED_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "fleet:derived-task-ids")

#: (task name, args, kwargs) or (task name, args, kwargs, options)
Call = tuple[str, Sequence[Any], dict[str, Any]] | tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]]

#: ``apply_async`` options a plain call may carry
OPTIONS = frozenset({"queue", "priority", "countdown", "eta", "expires", "time_limit", "soft_time_limit", "task_id"})
#: the task-level defaults (``@task(priority=...)``) that apply, as in ``send_task``
_TASK_DEFAULTS = ("queue", "priority", "expires", "time_limit", "soft_time_limit")
#: kombu's "json" serializer is ``json.dumps(body, cls=kombu.utils.json.JSONEncoder)``: one encoder
#: per process writes the same text, without an encoder built and a registry looked up per message
#: (4.1 -> 1.7 µs a body; tests/test_message_contract.py holds it to kombu's bytes)
_JSON = JSONEncoder()
_JSON_CONTENT = ("application/json", "utf-8")


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
    #: send ``after_task_publish`` once published (a canvas captured from Celery already did)
    announce: bool = True


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
        self._defaults: dict[str, dict[str, Any]] = {}
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
        chosen = {**self._task_defaults(name, task), **options}
        task_id = chosen.pop("task_id", None) or new_task_id()
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
        content_type, content_encoding, payload = serialize(body, self.serializer)
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

    def _task_defaults(self, name: str, task: Any) -> dict[str, Any]:
        """The options the task sets itself (``@task(priority=...)``), once per name and batch."""
        if name not in self._defaults:
            values = ((key, getattr(task, key, None)) for key in _TASK_DEFAULTS)
            self._defaults[name] = {key: value for key, value in values if value is not None}
        return self._defaults[name]


def serialize(body: Any, serializer: str) -> tuple[str, str, str | bytes]:
    """``kombu.serialization.dumps(body, serializer)``: (content type, content encoding, payload), errors included."""
    if serializer != "json":
        return dumps(body, serializer=serializer)
    try:
        return (*_JSON_CONTENT, _JSON.encode(body))
    except Exception as exc:  # kombu wraps whatever the encoder raises
        raise EncodeError(exc) from exc


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


def new_task_id() -> str:
    """A fresh task id: a UUIDv7 (RFC 9562, section 5.7), 48 bits of Unix milliseconds then 74 random bits.

    Ids that grow with time land next to each other in every index keyed by
    task id (SQLite's and PostgreSQL's B-trees of results and accepted ids):
    a batch of inserts touches a page or two, where uuid4's random ids touched
    a page per row (4x the write cost per id in a 300,000-row SQLite table).
    74 random bits keep them unguessable; Python 3.14's ``uuid.uuid7`` builds the same.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76 | 0x3 << 62) | 0x7 << 76 | 0x2 << 62  # version 7, RFC 9562 variant
    text = f"{value:032x}"  # str(uuid.UUID(int=value)), without building the object: 40% of the cost
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def issued_at(task_id: str) -> float | None:
    """When ``task_id`` was made (Unix seconds), read from a UUIDv7's first 48 bits; None for other ids.

    No other form carries a time: uuid4 and an Idempotency-Key's uuid5 ids answer None.
    """
    if len(task_id) != 36 or task_id[14] != "7" or task_id[19] not in "89abAB" or task_id[8] != "-":
        return None
    try:
        return int(task_id[:8] + task_id[9:13], 16) / 1000
    except ValueError:
        return None


def derived_ids(seed: str) -> Iterator[str]:
    """Task ids derived from ``seed``, in order: the same seed always yields the same ids.

    Whatever publishes again after an unknown outcome (a client retrying with
    its Idempotency-Key, a fan-out task run again) then republishes the same
    ids, and the worker runs each id once (fleet.worker.dedup).
    """
    n = 0
    while True:
        yield str(uuid.uuid5(DERIVED_IDS, f"{seed}\0{n}"))
        n += 1
