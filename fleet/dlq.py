"""Dead-letter queues: what died, why, and putting it back to work."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from typing import Any

from kombu import Connection

from fleet.metrics.stamp import PUBLISHED_AT_HEADER
from fleet.publish import Publisher, publisher_for
from fleet.republish import REPLAY_HEADER, republish
from queues import TASK_EXCHANGE, WORK_QUEUES, dlq_name

#: Header of Celery's task protocol 2 counting the retries a task has used (``task.request.retries``).
RETRIES_HEADER = "retries"
#: Traceback lines kept in a summary: the innermost frame and the exception.
TRACEBACK_TAIL = 3
#: Characters of a task's args and kwargs shown (their repr, as the publisher wrote it).
ARGS_SHOWN = 80


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    task: str
    task_id: str
    reason: str
    deaths: int
    died_at: str
    args: str
    retries: int = 0
    #: the exception the task failed with, from the result store ("" when it stored none)
    error: str = ""
    #: the last lines of its traceback
    traceback: str = ""
    kwargs: str = ""
    #: when it was first dead-lettered (``died_at`` is the last time)
    first_died_at: str = ""

    def as_row(self) -> dict[str, Any]:
        return self.__dict__


def failure_of(backend: Any, task_id: str) -> tuple[str, str]:
    """(exception, traceback summary) a task's FAILURE row holds, or ("", "") for any other state.

    Every dead letter that a task raised into has one: workers store the failure before
    rejecting the message (``result_extended``), so people see why without reading logs.
    """
    meta = backend.get_task_meta(task_id)
    if meta.get("status") != "FAILURE":
        return "", ""
    result = meta.get("result")  # the backend rebuilds the exception from its stored type and message
    error = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else repr(result)
    lines = [line.strip() for line in (meta.get("traceback") or "").strip().splitlines() if line.strip()]
    return error, " | ".join(lines[-TRACEBACK_TAIL:])


def _describe(queue: str, message: Any) -> DeadLetter:
    headers = message.headers or {}
    deaths = headers.get("x-death") or [{}]
    times = sorted(str(death["time"]) for death in deaths if death.get("time") is not None)
    return DeadLetter(
        queue=queue,
        task=str(headers.get("task", "?")),
        task_id=str(headers.get("id", "?")),
        reason=str(deaths[0].get("reason", "?")),
        deaths=sum(int(death.get("count", 1)) for death in deaths),
        died_at=times[-1] if times else "?",
        args=str(headers.get("argsrepr", ""))[:ARGS_SHOWN],
        retries=int(headers.get(RETRIES_HEADER) or 0),
        kwargs=str(headers.get("kwargsrepr", ""))[:ARGS_SHOWN],
        first_died_at=times[0] if times else "?",
    )


def _origin(queue: str, message: Any) -> str:
    """The work queue a dead letter came from (its x-death record, else the DLQ's owner)."""
    death = ((message.headers or {}).get("x-death") or [{}])[0]
    origin = death.get("queue", queue)
    return origin if origin in WORK_QUEUES else queue


def depths(connection: Connection) -> dict[str, int]:
    """Dead letters waiting per work queue."""
    channel = connection.default_channel
    return {queue: channel.queue_declare(dlq_name(queue), passive=True).message_count for queue in WORK_QUEUES}


def _unacked(channel: Any, queue: str) -> Iterator[Any]:
    """The dead letters of ``queue`` in order, each held unacked by ``channel`` until it is acked
    or the channel closes (then it returns to its place in the queue)."""
    while (message := channel.basic_get(dlq_name(queue), no_ack=False)) is not None:
        yield message


def peek(connection: Connection, queue: str, limit: int = 20, backend: Any = None, offset: int = 0) -> list[DeadLetter]:
    """Describe up to ``limit`` dead letters of ``queue`` after the first ``offset``, removing none.

    With a Celery result ``backend``, each carries the exception and traceback summary it died of.
    """
    channel = connection.channel()
    try:
        found: list[DeadLetter] = []
        for index, message in enumerate(_unacked(channel, queue)):
            if len(found) >= limit:
                break
            if index < offset:
                continue
            letter = _describe(queue, message)
            if backend is not None and letter.task_id != "?":
                error, trace = failure_of(backend, letter.task_id)
                letter = replace(letter, error=error, traceback=trace)
            found.append(letter)
        return found
    finally:
        channel.close()  # unacked messages go back to the queue


def replay(
    connection: Connection,
    queue: str,
    task_id: str | None = None,
    limit: int | None = None,
    publisher: Publisher | None = None,
    task_ids: Collection[str] | None = None,
) -> int:
    """Move dead letters of ``queue`` back to their work queue; return how many moved.

    Each message is republished by fleet's publisher (bounded, confirmed)
    before it is acked, so a crash mid-way duplicates at worst, never loses;
    marked as a replay, so the worker runs it again unless it already succeeded.
    A replayed task gets a fresh retry budget: its retry count is reset, or one
    failure would send a task that had used its retries straight back here.
    ``task_id`` or ``task_ids`` choose which; the others stay where they were.
    """
    if publisher is None:
        from fleet import default_app

        publisher = publisher_for(default_app())
    wanted = _wanted(task_id, task_ids)
    channel = connection.channel()
    moved = 0
    try:
        for message in _unacked(channel, queue):
            if limit is not None and moved >= limit:
                break
            if wanted is not None and (message.headers or {}).get("id") not in wanted:
                continue  # stays unacked, returns to the queue when the channel closes
            # a replay is a new publish: queue wait counts from now, not from the first attempt
            fresh = {PUBLISHED_AT_HEADER: time.time(), REPLAY_HEADER: True, RETRIES_HEADER: 0}
            republish(publisher, message, TASK_EXCHANGE, _origin(queue, message), **fresh)
            channel.basic_ack(message.delivery_tag)
            moved += 1
    finally:
        channel.close()
    return moved


def _wanted(task_id: str | None, task_ids: Collection[str] | None) -> set[str] | None:
    """The task ids an operation is limited to, or None for every dead letter."""
    if task_id is None and task_ids is None:
        return None
    return {*(task_ids or ()), *((task_id,) if task_id else ())}


def delete(connection: Connection, queue: str, task_ids: Collection[str]) -> int:
    """Delete the dead letters of ``queue`` with these task ids; return how many were deleted."""
    wanted = set(task_ids)
    channel = connection.channel()
    deleted = 0
    try:
        for message in _unacked(channel, queue):
            if (message.headers or {}).get("id") in wanted:
                channel.basic_ack(message.delivery_tag)
                deleted += 1
    finally:
        channel.close()
    return deleted


def purge(connection: Connection, queue: str) -> int:
    """Delete every dead letter of ``queue``; return how many were deleted."""
    return connection.default_channel.queue_purge(dlq_name(queue)) or 0


def to_json(letters: list[DeadLetter]) -> str:
    return json.dumps([letter.as_row() for letter in letters], indent=2)
