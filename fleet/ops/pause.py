"""Paused queues: one flag per queue in the store every API and worker already shares.

The flags live next to the task results (a ``fleet_paused_queues`` table in the SQL result
database, or a Redis hash), like the idempotency keys: every replica, pod and restarted
worker reads the same answer. Workers stop consuming a paused queue at once (a
``cancel_consumer`` broadcast), and check the flags when they start and on every heartbeat,
so a worker that missed the broadcast or starts later stays paused too
(fleet.worker.pausing). Messages keep arriving and wait in RabbitMQ; nothing is lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, delete, select

from fleet.settings import Settings
from fleet.sqlstore import ProcessEngine, insert_or_ignore

TABLE = "fleet_paused_queues"
REDIS_KEY = "fleet-paused-queues"


@dataclass(frozen=True)
class Pause:
    queue: str
    #: the name of the token that paused it (or the operator's user name, from the CLI)
    by: str
    at: float


class PauseStore(Protocol):
    def paused(self) -> dict[str, Pause]:
        """Every paused queue with who paused it and when."""

    def pause(self, queue: str, by: str) -> None:
        """Flag ``queue`` as paused (idempotent: the first pause's record stays)."""

    def resume(self, queue: str) -> bool:
        """Clear the flag; False if ``queue`` was not paused."""


class SQLPauses:
    """Flags in a table of the SQL result database (SQLite by default, PostgreSQL too)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.table = Table(
            TABLE,
            MetaData(),
            Column("queue", String(255), primary_key=True),
            Column("paused_by", String(255), nullable=False),
            Column("paused_at", Float, nullable=False),
        )
        # bounded: workers read the flags from their event loop, a hung database must not stall it
        self._engine = ProcessEngine(url, self.table.metadata, timeout=5)

    @property
    def engine(self) -> Engine:
        return self._engine()

    def paused(self) -> dict[str, Pause]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(self.table)).all()
        return {row.queue: Pause(row.queue, row.paused_by, row.paused_at) for row in rows}

    def pause(self, queue: str, by: str) -> None:
        row = {"queue": queue, "paused_by": by, "paused_at": time.time()}
        with self.engine.begin() as connection:
            connection.execute(insert_or_ignore(self.engine, self.table).values(**row))

    def resume(self, queue: str) -> bool:
        with self.engine.begin() as connection:
            return connection.execute(delete(self.table).where(self.table.c.queue == queue)).rowcount > 0


class RedisPauses:
    """Flags as fields of one Redis hash in the result backend's Redis."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def paused(self) -> dict[str, Pause]:
        found = {}
        for queue, raw in self.client.hgetall(REDIS_KEY).items():
            data = json.loads(raw)
            found[queue.decode()] = Pause(queue.decode(), data["by"], data["at"])
        return found

    def pause(self, queue: str, by: str) -> None:
        self.client.hsetnx(REDIS_KEY, queue, json.dumps({"by": by, "at": time.time()}))

    def resume(self, queue: str) -> bool:
        return bool(self.client.hdel(REDIS_KEY, queue))


def open_pauses(settings: Settings) -> PauseStore:
    """The flags next to the configured result backend (a SQLite file under var/ for any other backend)."""
    url = settings.results_url
    if url.startswith(("redis://", "rediss://")):
        return RedisPauses(url)
    if url.startswith("db+"):
        return SQLPauses(url.removeprefix("db+"))
    return SQLPauses(f"sqlite:///{settings.var_dir / 'paused.sqlite'}")


def pause_queue(store: PauseStore, publisher: Any, celery: Any, queue: str, by: str) -> None:
    """Flag ``queue`` paused, then tell every worker to stop consuming it now (``cancel_consumer``,
    on fleet's confirming publisher); a worker that misses it sees the flag on its next heartbeat."""
    from fleet.ops.control import broadcast

    store.pause(queue, by)
    publisher.run(lambda producer, timeout: broadcast(celery, producer, "cancel_consumer", {"queue": queue}, timeout))


def resume_queue(store: PauseStore, queue: str) -> bool:
    """Clear the flag: each worker started on ``queue`` consumes it again on its next heartbeat
    (fleet.worker.pausing), and no other pool's worker starts to. False if it was not paused."""
    return store.resume(queue)
