"""Monitoring: workers (Celery remote control), queues (passive declares), fleet health.

No management plugin is needed: queue depths and consumer counts come from a
passive ``queue.declare`` on the API's own bounded connection, worker figures
from ``inspect`` with a short timeout (``FLEET_API_INSPECT_TIMEOUT``) that ends early once
every expected worker replied.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from amqp.exceptions import AMQPError
from flask import Blueprint, Response, jsonify
from kombu import Producer
from kombu.exceptions import KombuError

from fleet.api.auth import open_route
from fleet.api.errors import RETRY_AFTER, ApiError, unavailable
from fleet.api.schemas import MonitoringHealth, QueueInfo, Queues, WorkerInfo, Workers
from fleet.api.state import ApiState, api_state
from fleet.publish import BrokerUnavailable
from fleet.worker.health import expected_replies
from queues import WORK_QUEUES, dlq_name

bp = Blueprint("monitoring", __name__)


def _consumers(producer: Producer, timeout: float) -> int:
    channel = producer.channel
    return sum(channel.queue_declare(queue, passive=True)[2] for queue in WORK_QUEUES)


def expected_workers(state: ApiState) -> int | None:
    """How many workers will answer (see fleet.worker.health.expected_replies); None when unknown."""
    try:
        consumers = state.publisher.run(_consumers)
    except BrokerUnavailable as exc:
        raise unavailable(f"RabbitMQ does not answer: {exc}") from None
    return expected_replies(state.settings.var_dir, consumers)


def ask(state: ApiState, command: str, expected: int | None) -> dict[str, Any]:
    """One remote-control broadcast (``inspect <command>``) on a connection of its own.

    It stops as soon as ``expected`` workers replied, so an idle fleet answers in milliseconds
    instead of always waiting out FLEET_API_INSPECT_TIMEOUT.
    """
    try:
        with state.publisher.fresh_connection() as connection:
            inspect = state.celery.control.inspect(
                timeout=state.settings.api_inspect_timeout, connection=connection, limit=expected
            )
            return getattr(inspect, command)() or {}
    except BrokerUnavailable as exc:
        raise unavailable(f"RabbitMQ does not answer: {exc}") from None
    except (OSError, AMQPError, KombuError) as exc:
        raise unavailable(f"the broker connection failed while asking the workers: {exc!r}") from None


def inspect_workers(state: ApiState) -> list[WorkerInfo]:
    """Ask every worker at once for stats, active and reserved tasks; whoever answers in time counts."""
    expected = expected_workers(state)
    with ThreadPoolExecutor(3) as pool:
        stats, active, reserved = pool.map(
            lambda command: ask(state, command, expected), ("stats", "active", "reserved")
        )
    workers = []
    for name in sorted(set(stats) | set(active) | set(reserved)):
        pool_info: dict[str, Any] = stats.get(name, {}).get("pool") or {}
        concurrency = pool_info.get("max-concurrency")
        workers.append(
            WorkerInfo(
                name=name,
                active=len(active.get(name) or []),
                reserved=len(reserved.get(name) or []),
                concurrency=concurrency if isinstance(concurrency, int) else None,
                pool=pool_info.get("implementation"),
            )
        )
    return workers


@bp.get("/api/monitoring/workers")
def workers() -> Response:
    state = api_state()
    found = inspect_workers(state)
    return jsonify(Workers(count=len(found), workers=found).model_dump(mode="json"))


def _queue_depths(producer: Producer, timeout: float) -> list[QueueInfo]:
    channel = producer.channel
    infos = []
    for queue in WORK_QUEUES:
        _, ready, consumers = channel.queue_declare(queue, passive=True)
        _, dead, _ = channel.queue_declare(dlq_name(queue), passive=True)
        infos.append(
            QueueInfo(
                name=queue, ready=ready, consumers=consumers, dead_letter_queue=dlq_name(queue), dead_lettered=dead
            )
        )
    return infos


@bp.get("/api/monitoring/queues")
def queues() -> Response:
    state = api_state()
    try:
        infos = state.publisher.run(_queue_depths)
    except BrokerUnavailable as exc:
        raise unavailable(f"RabbitMQ does not answer: {exc}") from None
    return jsonify(Queues(queues=infos).model_dump(mode="json"))


@bp.get("/api/monitoring/health")
@open_route
def health() -> Response:
    """200 when the broker answers and at least one worker replies to ping; else 503."""
    state = api_state()
    try:
        replies = ask(state, "ping", expected_workers(state))
        broker = True
    except ApiError:
        replies, broker = {}, False
    ok = broker and bool(replies)
    response = jsonify(
        MonitoringHealth(status="ok" if ok else "unavailable", workers=len(replies), broker=broker).model_dump()
    )
    if not ok:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response
