"""Every broker connection fleet makes walks the failover list quickly, in order.

``CELERY_BROKER_URL`` may be a failover list (``amqp://a//;amqp://b//;amqp://c//``).
kombu tries its URLs in order, skipping a dead node at once (connection refused),
and only sleeps between full rounds of the list. Two things slow that down in a
Celery worker, and both are fixed:

- Celery's consumer reconnects through ``Connection.ensure_connection`` without
  intervals, so kombu's defaults apply: 2, 4, 6 ... up to 30 s between rounds, and
  a node back after a short outage waits for the next round. :class:`FailoverConnection`
  takes the intervals from ``broker_transport_options`` (:data:`RECONNECT`) instead.
- Celery 5.5+'s native delayed delivery bootstep walks every URL of the list before
  the worker consumes; fleet's consumer leaves it out (fleet.worker.consumer).

Every process builds its connections here (API, beat, CLI, workers), so it is not
part of the worker package.
"""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP
from kombu import Connection
from kombu.transport import pyamqp

from fleet.read_ahead import FleetAMQPTransport

#: Seconds between full rounds of the failover list while no node answers: the
#: first retry after 0.2 s, then +0.3 s per round up to 1 s, so a worker consumes
#: again within about a second of any node answering. A refused connection costs
#: the broker nothing, so the short interval is cheap.
RECONNECT: dict[str, float] = {"interval_start": 0.2, "interval_step": 0.3, "interval_max": 1.0}


class FailoverConnection(Connection):
    """A kombu connection whose reconnect intervals default to the transport options', reading
    ahead on plain-TCP py-amqp (fleet.read_ahead)."""

    def get_transport_cls(self) -> type:
        transport_cls = super().get_transport_cls()
        return FleetAMQPTransport if transport_cls is pyamqp.Transport else transport_cls

    def ensure_connection(self, errback: Any = None, max_retries: int | None = None, **kwargs: Any) -> Connection:
        for name in ("interval_start", "interval_step", "interval_max"):
            if name in self.transport_options:
                kwargs.setdefault(name, self.transport_options[name])
        return super().ensure_connection(errback, max_retries, **kwargs)


class FailoverAMQP(AMQP):
    """Celery's AMQP glue, building :class:`FailoverConnection` for every connection."""

    Connection = FailoverConnection
    BrokerConnection = FailoverConnection
