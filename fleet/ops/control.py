"""Celery remote-control broadcasts published on fleet's confirming producer.

``app.control.revoke()``/``cancel_consumer()`` would publish through Celery's own pool with
retries and no deadline; this is the same pidbox message, bounded like every publish.
"""

from __future__ import annotations

from typing import Any

from kombu import Producer


def broadcast(celery: Any, producer: Producer, method: str, arguments: dict[str, Any], confirm_timeout: float) -> None:
    """Send the remote-control command ``method`` to every worker, without waiting for replies."""
    mailbox = celery.control.mailbox
    producer.publish(
        {"method": method, "arguments": arguments, "destination": None, "pattern": None, "matcher": None},
        exchange=mailbox.exchange.name,
        declare=[mailbox.exchange],
        headers={"clock": mailbox.clock.forward(), "expires": 0},
        serializer="json",
        retry=False,
        confirm_timeout=confirm_timeout,
    )
