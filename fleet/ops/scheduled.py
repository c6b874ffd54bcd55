"""Work that waits for its time: parked in ``fleet.delay.*`` queues (fleet.worker.parking), or held
by a worker until its countdown/ETA; and cancelling one of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from kombu import Connection

from queues import DELAY_SECONDS, WORK_QUEUES

#: Parked messages looked at per delay queue (each is held unacked while looked at).
PEEK_LIMIT = 500


def delay_queue_name(seconds: int) -> str:
    return f"fleet.delay.{seconds}s"


def _parked_messages(channel: Any, limit: int) -> Iterator[tuple[int, Any]]:
    for seconds in DELAY_SECONDS:
        for _ in range(limit):
            message = channel.basic_get(delay_queue_name(seconds), no_ack=False)
            if message is None:
                break
            yield seconds, message


def parked(connection: Connection, limit: int = PEEK_LIMIT) -> list[dict[str, Any]]:
    """Every parked task (up to ``limit`` per delay queue): id, task, target queue, due time.

    Each is held unacked on a channel of its own, then returned to its place when it closes.
    """
    channel = connection.channel()
    try:
        found = []
        for seconds, message in _parked_messages(channel, limit):
            headers = message.headers or {}
            found.append(
                {
                    "task_id": str(headers.get("id", "?")),
                    "task": str(headers.get("task", "?")),
                    "queue": message.delivery_info.get("routing_key", "?"),
                    "eta": headers.get("eta"),
                    "where": delay_queue_name(seconds),
                }
            )
        return found
    finally:
        channel.close()


def parked_per_queue(items: list[dict[str, Any]]) -> dict[str, int]:
    """How many parked tasks wait for each work queue (0 for those with none)."""
    counts = Counter(item["queue"] for item in items)
    return {queue: counts.get(queue, 0) for queue in WORK_QUEUES}


def held(scheduled_replies: dict[str, Any]) -> list[dict[str, Any]]:
    """Countdown/ETA tasks a worker holds, from ``inspect scheduled`` replies."""
    found = []
    for node, entries in sorted(scheduled_replies.items()):
        for entry in entries or []:
            request = entry.get("request") or {}
            found.append(
                {
                    "task_id": request.get("id", "?"),
                    "task": request.get("name", "?"),
                    "queue": (request.get("delivery_info") or {}).get("routing_key", "?"),
                    "eta": entry.get("eta"),
                    "where": node,
                }
            )
    return found


def unpark(connection: Connection, task_id: str) -> bool:
    """Remove the parked message of ``task_id`` for good; False if none is parked."""
    channel = connection.channel()
    try:
        for _, message in _parked_messages(channel, PEEK_LIMIT):
            if (message.headers or {}).get("id") == task_id:
                channel.basic_ack(message.delivery_tag)
                return True
        return False
    finally:
        channel.close()
