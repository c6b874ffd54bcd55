"""Queue depths read from the broker at scrape time (passive declares, nothing created).

Every worker exports every queue, so a queue whose pool is down still shows
its backlog and its zero consumers; dashboards take ``max by (queue)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
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
    replaced after an error. ``paused`` names the paused queues (fleet.ops.pause): each queue's
    ``fleet_queue_paused`` is 1 while it is paused, so backlog alerts can leave it alone.
    """

    def __init__(self, connect: Callable[[], Connection], paused: Callable[[], Iterable[str]] | None = None) -> None:
        self._connect = connect
        self._paused = paused
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

    def _read_paused(self) -> set[str] | None:
        if self._paused is None:
            return None
        try:
            return set(self._paused())
        except Exception as exc:  # noqa: BLE001 - a store that does not answer: no series, counted
            self.errors += 1
            logger.warning("reading the paused queues failed: %r", exc)
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
        paused = self._read_paused()
        if paused is not None:
            family = GaugeMetricFamily(
                "fleet_queue_paused", "1 while the queue is paused (fleet queue pause).", labels=["queue"]
            )
            for queue in WORK_QUEUES:
                family.add_metric([queue], 1 if queue in paused else 0)
            yield family
        yield CounterMetricFamily(
            "fleet_queue_metrics_errors", "Failed reads of queue depths from the broker.", value=self.errors
        )
