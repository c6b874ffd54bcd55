"""Republishing a received message elsewhere, unchanged but for its route."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Producer


def republish(producer: Producer, message: Any, exchange: Exchange | str, routing_key: str, **headers: Any) -> None:
    """Publish ``message``'s body, headers and properties to ``exchange``/``routing_key``.

    Persistent, and confirmed when the producer's connection uses publisher
    confirms (fleet's do), so the caller may ack the original afterwards.
    """
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
        retry=True,
        retry_policy={"max_retries": 3},
    )
