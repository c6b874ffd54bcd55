"""Republishing a received message elsewhere, unchanged but for its route, through fleet's publisher.

Used by DLQ replay and parking: one bounded, confirmed publish on the process's
:class:`fleet.publish.Publisher` (its deadline, its failover), after which the
caller may ack the original.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Producer

from fleet.publish import Publisher

#: header ``fleet dlq replay`` adds: the worker runs a replayed id again unless it succeeded (fleet.worker.dedup)
REPLAY_HEADER = "fleet_replay"


def republish(publisher: Publisher, message: Any, exchange: Exchange | str, routing_key: str, **headers: Any) -> None:
    """Publish ``message``'s body, headers and properties to ``exchange``/``routing_key``; return once confirmed.

    Persistent and mandatory; raises :class:`fleet.publish.BrokerUnavailable`
    within the publisher's deadline if RabbitMQ does not confirm it (then the
    caller keeps the original).
    """

    def send(producer: Producer, remaining: float) -> None:
        _publish(producer, message, exchange, routing_key, remaining, headers)

    publisher.run(send)


def _publish(
    producer: Producer,
    message: Any,
    exchange: Exchange | str,
    routing_key: str,
    confirm_timeout: float,
    headers: dict[str, Any],
) -> None:
    properties = message.properties
    producer.publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        headers={**(message.headers or {}), **headers},
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        priority=properties.get("priority"),
        correlation_id=properties.get("correlation_id"),
        reply_to=properties.get("reply_to"),
        delivery_mode=2,
        mandatory=True,
        retry=False,  # the publisher's one retry rule applies, within its deadline
        confirm_timeout=confirm_timeout,
    )
