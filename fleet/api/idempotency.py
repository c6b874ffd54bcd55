"""Idempotency-Key: a retried request returns the first answer instead of enqueueing twice.

Where the keys live, and why: next to the task results, because that store
already exists for every deployment, is shared by every gunicorn worker and
every API replica, and its retention is the window the API promises
(``FLEET_RESULT_EXPIRES``). With the default SQLite/SQL result backend the
keys are one small table (``fleet_idempotency``) in the same database, where a
primary key makes the reservation atomic; with a Redis result backend they are
Redis keys set with NX and a TTL. Nothing new to run or back up.

Protocol: the first request *reserves* the key with a short lease, publishes,
then *completes* the record with its response for the retention window. A
retry finds the record and gets the stored response (``Idempotent-Replayed:
true``); one that arrives while the first is still publishing gets 409; a key
reused for a different request gets 422. If publishing fails (503) the
reservation is released, so the client's retry publishes again; if the API dies
between publishing and completing, the lease runs out and a retry publishes
again. Either way the retry carries the *same* task ids: they are derived from
the key and the request (:func:`task_ids`), fixed from the first attempt, and
the worker runs a task id at most once (fleet.worker.dedup). A client that retries
until 202 gets exactly one run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, Text, delete, select
from sqlalchemy import update as sql_update

from fleet.api.schemas import IDEMPOTENCY_KEY_MAX
from fleet.messages import derived_ids
from fleet.settings import Settings
from fleet.sqlstore import ProcessEngine, insert_or_ignore

TABLE = "fleet_idempotency"
REDIS_PREFIX = "fleet-idempotency:"


@dataclass(frozen=True)
class Record:
    """What the store holds for a key: the request fingerprint and, once done, the answer."""

    fingerprint: str
    status: int | None = None
    body: Any = None

    @property
    def done(self) -> bool:
        return self.status is not None


class IdempotencyStore(Protocol):
    def reserve(self, key: str, fingerprint: str) -> Record | None:
        """Reserve ``key``; None if this caller now owns it, else the record already there."""

    def complete(self, key: str, fingerprint: str, status: int, body: Any) -> None:
        """Store the answer for the retention window."""

    def release(self, key: str) -> None:
        """Forget a reservation whose request failed, so a retry can go ahead."""


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Identifies the request a key was first used with."""
    return hashlib.sha256(b"\0".join((method.encode(), path.encode(), body))).hexdigest()


def task_ids(key: str, fingerprint: str) -> Iterator[str]:
    """The task ids of the request ``key`` names, in the order it publishes them.

    The same key and request always yield the same ids: a retry after a 503
    republishes what the first attempt may have queued, and the worker runs it once.
    """
    return derived_ids(f"{key}\0{fingerprint}")


class SQLStore:
    """Keys in a table of the SQL result database (SQLite by default, PostgreSQL too)."""

    def __init__(self, url: str, retention: float, lease: float) -> None:
        self.url = url
        self.retention = retention
        self.lease = lease
        self.metadata = MetaData()
        self.table = Table(
            TABLE,
            self.metadata,
            Column("key", String(IDEMPOTENCY_KEY_MAX), primary_key=True),
            Column("fingerprint", String(64), nullable=False),
            Column("expires_at", Float, nullable=False, index=True),
            Column("status", Integer, nullable=True),
            Column("body", Text, nullable=True),
        )
        self._engine = ProcessEngine(url, self.metadata)

    @property
    def engine(self) -> Engine:
        return self._engine()

    def reserve(self, key: str, fingerprint: str) -> Record | None:
        now = time.time()
        table = self.table
        with self.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.key == key, table.c.expires_at < now))
            lease = {"key": key, "fingerprint": fingerprint, "expires_at": now + self.lease}
            inserted = connection.execute(insert_or_ignore(self.engine, self.table).values(**lease))
            if inserted.rowcount == 1:
                return None
            row = connection.execute(
                select(table.c.fingerprint, table.c.status, table.c.body).where(table.c.key == key)
            ).first()
        if row is None:  # expired and removed by another request in between: try once more
            return self.reserve(key, fingerprint)
        return Record(row.fingerprint, row.status, json.loads(row.body) if row.body else None)

    def complete(self, key: str, fingerprint: str, status: int, body: Any) -> None:
        table = self.table
        with self.engine.begin() as connection:
            connection.execute(
                sql_update(table)
                .where(table.c.key == key, table.c.fingerprint == fingerprint)
                .values(status=status, body=json.dumps(body), expires_at=time.time() + self.retention)
            )
            # Keep the table small: drop what expired (cheap with the index).
            connection.execute(delete(table).where(table.c.expires_at < time.time()))

    def release(self, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(self.table).where(self.table.c.key == key, self.table.c.status.is_(None)))


class RedisStore:
    """Keys in the Redis result backend: SET NX with the lease, then SET with the retention TTL."""

    def __init__(self, url: str, retention: float, lease: float) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.retention = retention
        self.lease = lease

    def reserve(self, key: str, fingerprint: str) -> Record | None:
        name = REDIS_PREFIX + key
        for _ in range(3):
            if self.client.set(name, json.dumps({"fingerprint": fingerprint}), nx=True, px=int(self.lease * 1000)):
                return None
            raw = self.client.get(name)
            if raw is not None:
                data = json.loads(raw)
                return Record(data["fingerprint"], data.get("status"), data.get("body"))
        raise RuntimeError(f"idempotency key {key!r} kept changing under us")

    def complete(self, key: str, fingerprint: str, status: int, body: Any) -> None:
        value = json.dumps({"fingerprint": fingerprint, "status": status, "body": body})
        self.client.set(REDIS_PREFIX + key, value, px=int(self.retention * 1000))

    def release(self, key: str) -> None:
        self.client.delete(REDIS_PREFIX + key)


def open_store(settings: Settings) -> IdempotencyStore:
    """The store that lives next to the configured result backend."""
    url = settings.results_url
    retention = float(settings.result_expires)
    lease = 2 * settings.publish_timeout + 10
    if url.startswith(("redis://", "rediss://")):
        return RedisStore(url, retention, lease)
    if url.startswith("db+"):
        return SQLStore(url.removeprefix("db+"), retention, lease)
    return SQLStore(f"sqlite:///{settings.var_dir / 'idempotency.sqlite'}", retention, lease)
