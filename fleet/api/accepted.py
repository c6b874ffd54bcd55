"""The ids the API accepted, so a cancel can tell a queued task from an id nobody sent.

Celery answers PENDING both for a task still waiting in RabbitMQ and for an id
that never existed; a worker writes the first result row only when it starts
the task. The API therefore remembers every id it answered 202 for, next to
the results (one small table in the SQL result database, or Redis keys with a
TTL), for the results' retention (``FLEET_RESULT_EXPIRES``). Ids published
around the API (``celery call``, ``send_task``) are not here; a worker holding
one still makes it known. Remembering is best effort: a failure is logged and
the 202 stands, because the task was accepted either way.

A commit per request was about a millisecond of each enqueue (the hot path):
:class:`GroupRecord` lets the requests in flight share one transaction, and
each still returns only once its own ids are written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, Protocol

from flask import Response
from sqlalchemy import Column, Engine, Float, MetaData, String, Table, delete, select

from fleet.api.schemas import TASK_ID_MAX
from fleet.settings import Settings
from fleet.sqlstore import ProcessEngine, insert_or_ignore

logger = logging.getLogger("fleet.api")
TABLE = "fleet_accepted_tasks"
REDIS_PREFIX = "fleet-accepted:"
#: Expired rows are swept every this many records a process writes (indexed, so cheap).
SWEEP_EVERY = 500


class AcceptedIds(Protocol):
    def record(self, task_ids: Iterable[str]) -> None:
        """Remember ``task_ids`` for the retention window."""

    def known(self, task_id: str) -> bool:
        """Whether the API accepted ``task_id`` within the retention window."""


class SQLAcceptedIds:
    """Ids in a table of the SQL result database (SQLite by default, PostgreSQL too)."""

    def __init__(self, url: str, retention: float) -> None:
        self.url = url
        self.retention = retention
        self.table = Table(
            TABLE,
            MetaData(),
            Column("task_id", String(TASK_ID_MAX), primary_key=True),
            Column("expires_at", Float, nullable=False, index=True),
        )
        self._engine = ProcessEngine(url, self.table.metadata)  # SQLite: NORMAL sync (fleet.sqlstore)
        self._written = 0
        self._write_lock = threading.Lock()
        self._writer: Any = None
        self._writer_pid = 0

    @property
    def engine(self) -> Engine:
        return self._engine()

    def record(self, task_ids: Iterable[str]) -> None:
        expires = time.time() + self.retention
        engine = self.engine
        if engine.dialect.name == "sqlite":  # the default: straight to the driver, a third of SQLAlchemy's cost
            self._record_sqlite(engine, [(task_id, expires) for task_id in task_ids])
            return
        rows = [{"task_id": task_id, "expires_at": expires} for task_id in task_ids]
        with engine.begin() as connection:
            connection.execute(insert_or_ignore(engine, self.table), rows)
            if self._sweep_due(len(rows)):
                connection.execute(delete(self.table).where(self.table.c.expires_at < time.time()))

    def _record_sqlite(self, engine: Engine, rows: list[tuple[str, float]]) -> None:
        """One writer connection kept per process (a pool checkout and checkin cost as much as the insert)."""
        with self._write_lock:
            if self._writer is None or self._writer_pid != os.getpid():
                self._writer, self._writer_pid = engine.raw_connection(), os.getpid()
            connection = self._writer
            try:
                cursor = connection.cursor()
                cursor.executemany(f"INSERT OR IGNORE INTO {TABLE} (task_id, expires_at) VALUES (?, ?)", rows)
                if self._sweep_due(len(rows)):
                    cursor.execute(f"DELETE FROM {TABLE} WHERE expires_at < ?", (time.time(),))
                connection.commit()
            except BaseException:
                self._writer = None
                connection.invalidate()  # never reused after a failure
                raise

    def _sweep_due(self, written: int) -> bool:
        self._written += written
        if self._written < SWEEP_EVERY:
            return False
        self._written = 0
        return True

    def known(self, task_id: str) -> bool:
        query = select(self.table.c.task_id).where(
            self.table.c.task_id == task_id, self.table.c.expires_at >= time.time()
        )
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None


class RedisAcceptedIds:
    """Ids as Redis keys that expire with the results."""

    def __init__(self, url: str, retention: float) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.retention = int(retention)

    def record(self, task_ids: Iterable[str]) -> None:
        pipeline = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipeline.set(REDIS_PREFIX + task_id, b"1", ex=self.retention)
        pipeline.execute()

    def known(self, task_id: str) -> bool:
        return bool(self.client.exists(REDIS_PREFIX + task_id))


class GroupRecord:
    """Group commit for a store: concurrent ``record`` calls share one write; each returns once its ids are in.

    The first caller to find no write under way writes everything waiting (its
    own ids included); the others wait for the write that carries theirs, and a
    failed write raises in every caller whose ids it carried.
    """

    def __init__(self, store: AcceptedIds) -> None:
        self.store = store
        self._cond = threading.Condition()
        self._pending: list[str] = []
        self._next = 0  # the number of the write that will carry what is pending now
        self._written = 0  # writes finished
        self._writing = False
        self._failed: dict[int, BaseException] = {}

    def record(self, task_ids: Iterable[str]) -> None:
        with self._cond:
            self._pending.extend(task_ids)
            mine = self._next
            while self._written <= mine:
                if not self._writing:
                    self._write_pending()
                else:
                    self._cond.wait()
            error = self._failed.get(mine)
        if error is not None:
            raise error

    def _write_pending(self) -> None:
        """Called holding the lock; writes outside it, so callers arriving meanwhile queue up for the next."""
        batch, self._pending = self._pending, []
        number, self._writing = self._next, True
        self._next += 1
        self._cond.release()
        error = None
        try:
            self.store.record(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of this write
            error = exc
        finally:
            self._cond.acquire()
        self._failed.pop(number - 16, None)  # callers of a write that old have long read their answer
        if error is not None:
            self._failed[number] = error
        self._written, self._writing = number + 1, False
        self._cond.notify_all()

    def known(self, task_id: str) -> bool:
        return self.store.known(task_id)


def open_accepted(settings: Settings) -> AcceptedIds | None:
    """The record next to the configured result backend; None for a backend without one (e.g. rpc://)."""
    url = settings.results_url
    if url.startswith(("redis://", "rediss://")):
        return GroupRecord(RedisAcceptedIds(url, float(settings.result_expires)))
    if url.startswith("db+"):
        return GroupRecord(SQLAcceptedIds(url.removeprefix("db+"), float(settings.result_expires)))
    return None


def accepted_ids(body: Any) -> list[str]:
    """The task ids of a 202 body: one task, or a batch's ``tasks``."""
    if not isinstance(body, dict):
        return []
    if "task_id" in body:
        return [body["task_id"]]
    return [item["task_id"] for item in body.get("tasks", []) if isinstance(item, dict) and "task_id" in item]


def remembered(view: Callable[..., Response]) -> Callable[..., Response]:
    """Record the ids of every 202 ``view`` answers (a replayed answer's too: recording is idempotent)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        from fleet.api.state import api_state

        response = view(*args, **kwargs)
        store = api_state().accepted
        if response.status_code == 202 and store is not None:
            try:
                ids = getattr(response, "fleet_task_ids", None)  # set by answer_accepted; a replay has none
                store.record(accepted_ids(response.get_json()) if ids is None else ids)
            except Exception:  # noqa: BLE001 - the task is accepted either way; cancel falls back to the workers
                logger.warning("could not record accepted task ids", exc_info=True)
        return response

    return wrapper
