"""Queue depths read from the broker at scrape time (passive declares, nothing created).

Every worker exports every queue, so a queue whose pool is down still shows
its backlog and its zero consumers; dashboards take ``max by (queue)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kombu import Connection

from queues import WORK_QUEUES, dlq_name

logger = logging.getLogger("fleet.metrics")


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    ready: int
    consumers: int
    dead_letters: int


def read_depths(connection: Connection) -> list[QueueDepth]:
    """Ready messages and consumers of every work queue, and the depth of its ``<queue>.dlq``."""
    channel = connection.default_channel
    depths = []
    for queue in WORK_QUEUES:
        _, ready, consumers = channel.queue_declare(queue, passive=True)
        _, dead, _ = channel.queue_declare(dlq_name(queue), passive=True)
        depths.append(QueueDepth(queue, ready, consumers, dead))
    return depths


class QueueCollector:
    """A custom collector: one broker round trip per queue per scrape; failures counted, not hidden.

    ``connect`` builds a new broker connection; one is kept between scrapes and
    replaced after an error.
    """

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self.errors = 0

    def _read(self) -> list[QueueDepth] | None:
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = self._connect()
                return read_depths(self._connection)
            except Exception as exc:  # noqa: BLE001 - any broker failure is a scrape error, counted
                self.errors += 1
                logger.warning("reading queue depths from the broker failed: %r", exc)
                self.close()
                return None

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001 - it is already broken
                pass
            self._connection = None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        depths = self._read()
        if depths is not None:
            families = {
                "ready": GaugeMetricFamily(
                    "fleet_queue_messages_ready", "Messages ready in the queue.", labels=["queue"]
                ),
                "consumers": GaugeMetricFamily("fleet_queue_consumers", "Consumers on the queue.", labels=["queue"]),
                "dead_letters": GaugeMetricFamily(
                    "fleet_queue_dead_letters", "Messages dead-lettered to <queue>.dlq.", labels=["queue"]
                ),
            }
            for depth in depths:
                for field, family in families.items():
                    family.add_metric([depth.queue], getattr(depth, field))
            yield from families.values()
        yield CounterMetricFamily(
            "fleet_queue_metrics_errors", "Failed reads of queue depths from the broker.", value=self.errors
        )
