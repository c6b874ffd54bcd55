"""Beat's own ``/metrics``: is a beat leading and ticking, and when did each entry last go out.

Beat is one plain process, so a private registry served from a thread is enough
(no multiprocess files). Every beat serves these, the standby included; the
leader's values are the live ones, so dashboards and alerts take ``max``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, start_http_server

logger = logging.getLogger("fleet.metrics")


class BeatMetrics:
    """The gauges one beat exports; :meth:`serve` starts its HTTP server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.last_tick = Gauge(
            "fleet_beat_last_tick_timestamp",
            "When this beat last evaluated the schedule as the leader (unix time; 0: never led).",
            registry=self.registry,
        )
        self.leader = Gauge(
            "fleet_beat_leader", "1 while this beat holds the leader lock, else 0.", registry=self.registry
        )
        self.last_sent = Gauge(
            "fleet_beat_entry_last_sent_timestamp",
            "When the entry was last sent by this beat, or by the leader before it took over (unix time).",
            ["entry"],
            registry=self.registry,
        )
        self.next_due = Gauge(
            "fleet_beat_entry_next_due_timestamp",
            "When the entry is next due, counted from its last send (unix time); past it, the run is late.",
            ["entry"],
            registry=self.registry,
        )

    def serve(self, addr: str, port: int) -> bool:
        """Start the HTTP server thread; a taken port is logged, never fatal (the target shows down)."""
        try:
            start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            logger.error("metrics: beat cannot serve on %s:%s (%s); it runs without /metrics", addr, port, exc)
            return False
        logger.info("metrics: beat serving /metrics on %s:%s", addr, port)
        return True

    def ticked(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)
        if leading:
            self.last_tick.set(time.time())

    def entry(self, name: str, last_sent: datetime, next_due: float) -> None:
        self.last_sent.labels(name).set(last_sent.timestamp())
        self.next_due.labels(name).set(next_due)
