"""``task-sent`` events for every publish path, as ``send_task`` sends them (FLEET_TASK_EVENTS=1).

Celery sends ``task-sent`` only from its own ``send_task``; fleet's API and fan-outs publish
through :mod:`fleet.publish`, which sends the ``after_task_publish`` signal exactly as Celery
does but no event, so Flower and ``celery events`` never saw those tasks as sent. This module
sends the event from that signal, for both paths alike; Celery's own ``task_send_sent_event``
is off so nothing is sent twice (fleet/celery_app.py). The fields are the ones Celery's
``as_task_v2`` and ``send_task_message`` put in theirs.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, current_app, signals

logger = logging.getLogger("fleet.events")

_DISPATCH_UID = "fleet.sent_events"
_app: Celery | None = None


def connect(app: Celery) -> None:
    """Send ``task-sent`` for every task ``app``'s process publishes from now on."""
    global _app
    _app = app
    signals.after_task_publish.connect(_on_published, weak=False, dispatch_uid=_DISPATCH_UID)


def disconnect() -> None:
    global _app
    signals.after_task_publish.disconnect(dispatch_uid=_DISPATCH_UID)
    _app = None


def sent_event(headers: dict[str, Any], exchange: Any, routing_key: str, queue: str) -> dict[str, Any]:
    """The fields of Celery's ``task-sent`` event, from a protocol-2 message's headers."""
    return {
        "uuid": headers.get("id"),
        "root_id": headers.get("root_id"),
        "parent_id": headers.get("parent_id"),
        "name": headers.get("task"),
        "args": headers.get("argsrepr"),
        "kwargs": headers.get("kwargsrepr"),
        "retries": headers.get("retries", 0),
        "eta": headers.get("eta"),
        "expires": headers.get("expires"),
        "queue": queue,
        "exchange": getattr(exchange, "name", exchange),
        "routing_key": routing_key,
    }


def _queue_name(app: Celery, exchange: Any, routing_key: str) -> str:
    """The queue a message was published to: fleet's queues are reached by their routing key."""
    name = getattr(exchange, "name", exchange) or ""
    if not name:  # the default exchange routes by queue name
        return routing_key
    for queue in app.amqp.queues.values():
        if queue.exchange is not None and queue.exchange.name == name and queue.routing_key == routing_key:
            return queue.name
    return routing_key


def _on_published(
    sender: str | None = None,
    headers: dict[str, Any] | None = None,
    exchange: Any = None,
    routing_key: str = "",
    **_: Any,
) -> None:
    app = _app
    if app is None or app is not current_app._get_current_object():  # another app's publish, not ours to report
        return
    if not headers or "task" not in headers:  # protocol 1 or not a task: nothing to describe
        return
    fields = sent_event(headers, exchange, routing_key, _queue_name(app, exchange, routing_key))
    try:
        with app.events.default_dispatcher() as dispatcher:
            dispatcher.send("task-sent", **fields)
    except Exception:  # an event is best effort: the task itself is already confirmed by RabbitMQ
        logger.warning("could not send the task-sent event of %s", fields["uuid"], exc_info=True)
