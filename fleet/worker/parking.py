"""Far-future ETA tasks wait in RabbitMQ, not unacked inside a worker.

Celery holds a countdown/ETA message unacked until it is due. RabbitMQ closes
any channel holding an unacked delivery past its ``consumer_timeout``, which
makes the worker drop every message on that channel. So a worker only holds
messages due within half the consumer timeout; anything later is republished
(confirmed) into a ``fleet.delay.<n>s`` queue whose TTL returns it to its work
queue, and only then acked. It comes back closer to due, and is held or parked
again. Revokes and expiry still apply when it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery.utils.time import maybe_iso8601
from celery.worker.strategy import default as default_strategy

from fleet.publish import publisher_for
from fleet.republish import republish
from queues import DELAY_EXCHANGE, DELAY_HEADER, DELAY_SECONDS

logger = logging.getLogger("fleet.parking")


def park_for(remaining: float, hold_limit: float) -> int | None:
    """The delay queue (seconds) to park a message due in ``remaining`` s, or None to hold it.

    Never parks longer than ``remaining``, so a task never runs late because of it.
    """
    if remaining <= hold_limit:
        return None
    fitting = [seconds for seconds in DELAY_SECONDS if seconds <= remaining]
    return fitting[-1] if fitting else None


def _seconds_until(eta: str) -> float:
    due = maybe_iso8601(eta)  # Celery's parser, the one fleet.worker.protocol checked the header with
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    return (due - datetime.now(UTC)).total_seconds()


def park(app: Any, message: Any, seconds: int) -> None:
    """Republish ``message`` into the ``seconds`` delay queue with a confirm (bounded), then ack it."""
    republish(
        publisher_for(app), message, DELAY_EXCHANGE, message.delivery_info["routing_key"], **{DELAY_HEADER: seconds}
    )
    message.ack()


def strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    """Celery's default strategy, parking messages due later than the hold limit."""
    handle = default_strategy(task, app, consumer, **kwargs)
    hold_limit = app.fleet_settings.broker_consumer_timeout / 2

    def task_message_handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        eta = (message.headers or {}).get("eta")
        seconds = park_for(_seconds_until(eta), hold_limit) if eta else None
        if seconds is not None:
            try:
                park(app, message, seconds)
            except Exception:  # noqa: BLE001 - holding it is the safe fallback
                logger.exception("could not park task %s; holding it in the worker", message.headers.get("id"))
            else:
                logger.info(
                    "parked task %s for %ss (due in %.0fs)", message.headers.get("id"), seconds, _seconds_until(eta)
                )
                return None
        return handle(message, body, ack, reject, callbacks, **kw)

    return task_message_handler
