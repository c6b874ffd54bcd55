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


#: kombu's separator between the URLs of a failover list (``amqp://a//;amqp://b//``)
FAILOVER_SEPARATOR = ";"


def normalize_broker_url(url: str) -> str:
    """Return ``url`` with ``amqp://`` pinned to py-amqp; refuse librabbitmq.

    A failover list is normalized URL by URL: kombu parses each alternate's
    scheme again when it fails over, so an unpinned second URL would switch the
    connection to librabbitmq on the first failover.

    Raises ``ValueError`` with the reason when a URL names librabbitmq.
    """
    urls = broker_urls(url)
    if not urls:
        raise ValueError("expected a URL such as amqp://user:password@host:5672/vhost")
    return FAILOVER_SEPARATOR.join(_pin(one) for one in urls)


def broker_urls(url: str) -> list[str]:
    """The URLs of a (possibly single-URL) failover list, in the order they are tried."""
    return [part.strip() for part in url.split(FAILOVER_SEPARATOR) if part.strip()]


def _pin(url: str) -> str:
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
