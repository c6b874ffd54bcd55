"""What the ops API and the console show and do, gathered through the API's state: its broker
connections and publisher, the workers' remote control, the result backend and the pause flags.

Both fleet.api.ops_routes (JSON) and fleet.console (pages) call these, so a page and its API
route always agree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from amqp.exceptions import AMQPError
from kombu import Connection
from kombu.exceptions import KombuError

from fleet.api.errors import ApiError, unavailable
from fleet.api.monitoring import ask, expected_workers
from fleet.api.state import ApiState
from fleet.ops import dead_letters, scheduled, workers
from fleet.ops import tasks as task_rows
from fleet.ops.control import broadcast
from fleet.ops.pause import pause_queue, resume_queue
from fleet.ops.queues import QueueRow, overview
from fleet.pools import POOLS
from fleet.publish import BrokerUnavailable
from queues import WORK_QUEUES


def known_queue(queue: str) -> str:
    if queue not in WORK_QUEUES:
        raise ApiError(
            404,
            "unknown_queue",
            f"no work queue {queue!r}: the queues are {', '.join(WORK_QUEUES)}",
            [{"field": "queue", "message": "unknown"}],
        )
    return queue


@contextmanager
def broker(state: ApiState) -> Iterator[Connection]:
    """A connection of the request's own; a broker that does not answer is a 503."""
    try:
        with state.publisher.fresh_connection() as connection:
            yield connection
    except BrokerUnavailable as exc:
        raise unavailable(f"RabbitMQ does not answer: {exc}") from None
    except (OSError, AMQPError, KombuError) as exc:
        raise unavailable(f"the broker connection failed: {exc!r}") from None


def _ask_all(state: ApiState, *commands: str) -> list[dict[str, Any]]:
    """Several ``inspect`` broadcasts at once, each stopping when every expected worker replied."""
    expected = expected_workers(state)
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda command: ask(state, command, expected), commands))


def queue_rows(state: ApiState) -> list[QueueRow]:
    active, reserved = _ask_all(state, "active", "reserved")
    paused = state.pauses.paused()
    with broker(state) as connection:
        parked = scheduled.parked_per_queue(scheduled.parked(connection))
        return overview(connection, paused, parked, workers.unacked_per_queue(active, reserved) if active else None)


def dead_letter_page(state: ApiState, queue: str, limit: int, offset: int) -> dict[str, Any]:
    with broker(state) as connection:
        return dead_letters.page(connection, known_queue(queue), limit, offset, state.celery.backend)


def replay(state: ApiState, queue: str, task_ids: Collection[str] | None) -> int:
    with broker(state) as connection:
        return dead_letters.replay(connection, known_queue(queue), task_ids, state.publisher)


def delete(state: ApiState, queue: str, task_ids: Collection[str] | None) -> int:
    with broker(state) as connection:
        return dead_letters.delete(connection, known_queue(queue), task_ids)


def scheduled_items(state: ApiState) -> list[dict[str, Any]]:
    (held,) = _ask_all(state, "scheduled")
    with broker(state) as connection:
        parked = scheduled.parked(connection)
    return [{**item, "kind": "parked"} for item in parked] + [{**item, "kind": "held"} for item in scheduled.held(held)]


def cancel(state: ApiState, task_id: str) -> bool:
    """Cancel a waiting task: remove it if parked, and revoke it (a worker holding it, or one that
    gets it later, discards it); stored as REVOKED. True if it was removed from a delay queue."""
    from fleet.api.task_status import store_revoked

    with broker(state) as connection:
        unparked = scheduled.unpark(connection, task_id)
    store_revoked(state, task_id)
    _broadcast(state, "revoke", {"task_id": task_id, "terminate": False, "signal": None})
    return unparked


def _broadcast(state: ApiState, method: str, arguments: dict[str, Any]) -> None:
    try:
        state.publisher.run(lambda producer, timeout: broadcast(state.celery, producer, method, arguments, timeout))
    except BrokerUnavailable as exc:
        raise unavailable(f"RabbitMQ does not answer: {exc}") from None


def worker_pools(state: ApiState) -> list[dict[str, Any]]:
    stats, active, reserved = _ask_all(state, "stats", "active", "reserved")
    specs = [state.pool_of(spec.queues[0]) or spec for spec in POOLS.values()]
    return workers.report(specs, stats, active, reserved, workers.heartbeat_ages(state.settings.var_dir))


def recent_tasks(api: ApiState, **query: Any) -> dict[str, Any]:
    try:
        return task_rows.recent(api.celery.backend, **query)
    except task_rows.NoTaskQuery as exc:
        raise ApiError(501, "not_implemented", str(exc)) from None


def pause(state: ApiState, queue: str, by: str) -> None:
    try:
        pause_queue(state.pauses, state.publisher, state.celery, known_queue(queue), by)
    except BrokerUnavailable as exc:
        raise unavailable(
            f"paused, but the broadcast to the workers failed (they pause within a heartbeat): {exc}"
        ) from None


def resume(state: ApiState, queue: str) -> bool:
    return resume_queue(state.pauses, known_queue(queue))
