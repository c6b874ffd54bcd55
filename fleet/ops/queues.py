"""One row per work queue: ready, unacked, consumers, dead letters, parked, paused."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kombu import Connection

from fleet.metrics.queues import read_depths
from fleet.ops.pause import Pause


@dataclass(frozen=True)
class QueueRow:
    name: str
    ready: int
    #: delivered to a worker and not yet acknowledged (running or reserved), from the workers'
    #: own answers; None when they were not asked
    unacked: int | None
    consumers: int
    dead_letters: int
    parked: int
    paused: bool
    paused_by: str | None = None
    paused_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def overview(
    connection: Connection,
    paused: dict[str, Pause],
    parked: dict[str, int],
    unacked: dict[str, int] | None = None,
) -> list[QueueRow]:
    """Every work queue, in queues.py's order (depths by passive declares, as the metrics read them)."""
    rows = []
    for depth in read_depths(connection):
        pause = paused.get(depth.queue)
        rows.append(
            QueueRow(
                name=depth.queue,
                ready=depth.ready,
                unacked=None if unacked is None else unacked.get(depth.queue, 0),
                consumers=depth.consumers,
                dead_letters=depth.dead_letters,
                parked=parked.get(depth.queue, 0),
                paused=pause is not None,
                paused_by=pause.by if pause else None,
                paused_at=pause.at if pause else None,
            )
        )
    return rows
