"""Dead letters for operators: a page of one DLQ with why each died, replay, delete.

Built on fleet.dlq (which the ``fleet dlq`` command uses too): browsing holds the page's
messages unacked on a channel of its own and closes it, so each returns to its place.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from kombu import Connection

from fleet import dlq
from fleet.publish import Publisher
from queues import dlq_name


def exception_of(error: str) -> dict[str, str] | None:
    """``{"type", "message"}`` from fleet.dlq's ``"Type: message"`` (None when no failure was stored)."""
    if not error:
        return None
    kind, _, message = error.partition(": ")
    return {"type": kind, "message": message}


def item(letter: dlq.DeadLetter) -> dict[str, Any]:
    """One dead letter as the API and the console show it."""
    return {
        "task_id": letter.task_id,
        "task": letter.task,
        "args": letter.args,
        "kwargs": letter.kwargs,
        "exception": exception_of(letter.error),
        "traceback": letter.traceback,
        "reason": letter.reason,
        "count": letter.deaths,
        "retries": letter.retries,
        "first_death": letter.first_died_at,
        "last_death": letter.died_at,
    }


def total(connection: Connection, queue: str) -> int:
    return connection.default_channel.queue_declare(dlq_name(queue), passive=True).message_count


def page(connection: Connection, queue: str, limit: int, offset: int, backend: Any) -> dict[str, Any]:
    """``{"queue", "total", "limit", "offset", "items"}``: the dead letters of ``queue`` from ``offset`` on."""
    letters = dlq.peek(connection, queue, limit, backend, offset=offset)
    return {
        "queue": queue,
        "total": total(connection, queue),
        "limit": limit,
        "offset": offset,
        "items": [item(letter) for letter in letters],
    }


def replay(
    connection: Connection, queue: str, task_ids: Collection[str] | None, publisher: Publisher | None = None
) -> int:
    """Replay these dead letters (None: all of them), each with a fresh retry budget."""
    return dlq.replay(connection, queue, publisher=publisher, task_ids=task_ids)


def delete(connection: Connection, queue: str, task_ids: Collection[str] | None) -> int:
    """Delete these dead letters (None: all of them)."""
    return dlq.purge(connection, queue) if task_ids is None else dlq.delete(connection, queue, task_ids)
