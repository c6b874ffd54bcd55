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
:class:`WriteBehind` writes a process's fresh ids a few milliseconds after
their 202s, in one commit, and a reader waits that long for a fresh id.
"""

from __future__ import annotations

import atexit
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
from fleet.messages import issued_at
from fleet.settings import Settings
from fleet.sqlstore import ProcessEngine, insert_or_ignore

logger = logging.getLogger("fleet.api")
TABLE = "fleet_accepted_tasks"
REDIS_PREFIX = "fleet-accepted:"
#: Expired rows are swept every this many records a process writes (indexed, so cheap).
SWEEP_EVERY = 500
#: How long the writer gathers handed-over ids before a commit (WriteBehind).
LINGER = 0.005
#: Longest a fresh id's record may trail its 202; a reader waits up to this long for a fresh id.
RECORD_LAG = 1.0
#: How often a reader asks again for a fresh id not found yet.
POLL = 0.01
#: Ids waiting for the writer beyond which requests write their own (memory stays bounded).
MAX_PENDING = 50_000
#: How long a process leaving waits for its writer.
EXIT_FLUSH = 5.0


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


class WriteBehind:
    """Writes a request's fresh ids just after its 202: one writer thread per process, one commit per few ms.

    A write per request, even one the requests in flight shared (a group
    commit), cost about a fifth of an enqueue's CPU: every waiting request
    thread was a GIL hand-off, and SQLite takes and drops its locks per commit.
    Here the request hands its ids over and answers; the process's writer
    commits whatever the last ``linger`` seconds gathered.

    The lag is made up on the reading side. An id :func:`fleet.messages.new_task_id`
    made less than ``RECORD_LAG`` ago and not found yet is asked about again until
    it is that old, so a status or a cancel right after the 202 finds it, on any API
    process. Ids that carry no time (an Idempotency-Key's, a canvas's) are written
    before the 202, as are all of them if the writer cannot keep up. What a process
    killed outright had not written yet is lost, as a failed write is: the record is
    best effort (the module docstring).
    """

    def __init__(self, store: AcceptedIds, linger: float = LINGER) -> None:
        self.store = store
        self.linger = linger
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for ids
        self._written = threading.Condition(self._lock)  # flush() waits here for the writer
        self._pending: list[str] = []
        self._handed = self._done = 0  # ids handed to the writer / written (or given up on), ever
        self._pid = 0

    def record(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        fresh = [task_id for task_id in ids if issued_at(task_id) is not None]
        if len(fresh) < len(ids):
            self.store.record([task_id for task_id in ids if issued_at(task_id) is None])
        if fresh and not self._hand(fresh):
            self.store.record(fresh)  # the writer is behind (a slow store): this request waits, as it used to

    def _hand(self, ids: list[str]) -> bool:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's writer did not come along
                self._start()
            if len(self._pending) >= MAX_PENDING:
                return False
            if not self._pending:
                self._work.notify()
            self._pending.extend(ids)
            self._handed += len(ids)
            return True

    def _start(self) -> None:
        """Called holding the lock."""
        self._pid, self._pending, self._handed, self._done = os.getpid(), [], 0, 0
        threading.Thread(target=self._run, name="fleet-accepted-ids", daemon=True).start()
        atexit.register(self.flush, EXIT_FLUSH)  # a worker stopping gracefully writes what it answered

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._work.wait()
            time.sleep(self.linger)  # the requests of the next few ms share this commit
            with self._lock:
                batch, self._pending = self._pending, []
            try:
                self.store.record(batch)
            except Exception:  # noqa: BLE001 - the tasks are accepted either way; cancel falls back to the workers
                logger.warning("could not record %d accepted task ids", len(batch), exc_info=True)
            with self._lock:
                self._done += len(batch)
                self._written.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every id handed over so far is written; False if ``timeout`` passed first."""
        with self._lock:
            if self._pid != os.getpid():
                return True
            target = self._handed
            return self._written.wait_for(lambda: self._done >= target, timeout)

    def known(self, task_id: str) -> bool:
        if self.store.known(task_id):
            return True
        issued = issued_at(task_id)
        if issued is None:
            return False
        until = min(issued, time.time()) + RECORD_LAG  # a clock ahead of ours waits no longer than that
        while time.time() < until:
            time.sleep(POLL)
            if self.store.known(task_id):
                return True
        return False


def open_accepted(settings: Settings) -> AcceptedIds | None:
    """The record next to the configured result backend; None for a backend without one (e.g. rpc://)."""
    url = settings.results_url
    if url.startswith(("redis://", "rediss://")):
        return WriteBehind(RedisAcceptedIds(url, float(settings.result_expires)))
    if url.startswith("db+"):
        return WriteBehind(SQLAcceptedIds(url.removeprefix("db+"), float(settings.result_expires)))
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
