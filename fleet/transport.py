"""Which AMQP client fleet speaks: always py-amqp.

kombu quietly swaps ``amqp://`` for librabbitmq whenever ``import librabbitmq``
succeeds. librabbitmq has no publisher confirms (accepted tasks could be lost)
and crashes Celery 5.7 workers at start, so fleet pins the transport by name.
"""

from __future__ import annotations

LIBRABBITMQ_REFUSED = (
    "CELERY_BROKER_URL uses librabbitmq://, which fleet refuses: librabbitmq has no "
    "publisher confirms (an accepted task could be lost without anyone knowing) and "
    "Celery 5.7 workers crash on it at start. Use amqp:// (or amqps:// for TLS); "
    "fleet runs both on py-amqp."
)


def normalize_broker_url(url: str) -> str:
    """Return ``url`` with ``amqp://`` pinned to py-amqp; refuse librabbitmq.

    Raises ``ValueError`` with the reason when the URL names librabbitmq.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL such as amqp://user:password@host:5672/vhost")
    if scheme == "librabbitmq":
        raise ValueError(LIBRABBITMQ_REFUSED)
    if scheme == "amqp":
        # "pyamqp" is kombu's explicit name for the same transport; amqps:// is
        # already py-amqp's SSL transport.
        return f"pyamqp://{rest}"
    return url
