"""``fleet status``: the dashboard's facts in a terminal, for someone without Grafana.

Queues come from the broker (passive declares), workers from Celery's remote
control (``inspect``), so it needs nothing but RabbitMQ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from celery import Celery

from fleet.metrics.queues import QueueDepth, read_depths
from fleet.pools import POOLS
from fleet.worker.health import expected_replies


@dataclass(frozen=True)
class WorkerState:
    node: str
    pool: str
    concurrency: int
    active: int
    reserved: int


@dataclass(frozen=True)
class PoolState:
    pool: str
    queues: str
    replicas: int
    workers: int
    concurrency: int
    active: int
    reserved: int

    @property
    def saturation(self) -> float:
        return self.active / self.concurrency if self.concurrency else 0.0


def pool_of(node: str) -> str:
    """``email@host`` and ``high_priority-1@host`` -> their pool (node names from fleet.worker.node_name)."""
    name = node.split("@", 1)[0]
    base, _, index = name.rpartition("-")
    return base if index.isdigit() and base in POOLS else name


def read_workers(app: Celery, timeout: float, expected: int | None = None) -> list[WorkerState]:
    """Every worker's figures; the broadcasts stop as soon as ``expected`` workers replied."""
    inspect = app.control.inspect(timeout=timeout, limit=expected)
    stats = inspect.stats() or {}
    active = inspect.active() or {}
    reserved = inspect.reserved() or {}
    return [
        WorkerState(
            node,
            pool_of(node),
            int(info.get("pool", {}).get("max-concurrency") or 0),
            len(active.get(node) or ()),
            len(reserved.get(node) or ()),
        )
        for node, info in sorted(stats.items())
    ]


def summarize_pools(workers: list[WorkerState]) -> list[PoolState]:
    rows = []
    for spec in POOLS.values():
        mine = [w for w in workers if w.pool == spec.name]
        rows.append(
            PoolState(
                spec.name,
                ",".join(spec.queues),
                spec.replicas,
                len(mine),
                sum(w.concurrency for w in mine),
                sum(w.active for w in mine),
                sum(w.reserved for w in mine),
            )
        )
    return rows


def fleet_status(app: Celery, timeout: float = 1.0) -> dict[str, Any]:
    """Queues, pools and workers as plain data (what ``fleet status --json`` prints)."""
    with app.connection_for_read() as connection:
        queues: list[QueueDepth] = read_depths(connection)
    expected = expected_replies(app.fleet_settings.var_dir, sum(q.consumers for q in queues))
    workers = read_workers(app, timeout, expected)
    return {
        "queues": [asdict(q) for q in queues],
        "pools": [{**asdict(p), "saturation": round(p.saturation, 3)} for p in summarize_pools(workers)],
        "workers": [asdict(w) for w in workers],
    }


def _table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    cells = [header, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return [*lines, ""]


def render(status: dict[str, Any]) -> str:
    queues = [(q["queue"], q["ready"], q["consumers"], q["dead_letters"]) for q in status["queues"]]
    pools = [
        (
            p["pool"],
            p["queues"],
            f"{p['workers']}/{p['replicas']}" + ("  DOWN" if not p["workers"] else ""),
            p["concurrency"],
            p["active"],
            p["reserved"],
            f"{p['saturation']:.0%}",
        )
        for p in status["pools"]
    ]
    workers = [(w["node"], w["pool"], w["concurrency"], w["active"], w["reserved"]) for w in status["workers"]]
    lines = _table("QUEUES", ("queue", "ready", "consumers", "dead letters"), queues)
    lines += _table("POOLS", ("pool", "queues", "workers", "concurrency", "active", "reserved", "saturation"), pools)
    lines += _table(
        "WORKERS", ("node", "pool", "concurrency", "active", "reserved"), workers or [("(none)",) + ("",) * 4]
    )
    return "\n".join(lines).rstrip() + "\n"
