"""fleet's own small tables beside the task results (idempotency keys, accepted ids, paused queues).

Each table lives in the SQL result database every API and worker process already shares, so
each store needs the same two things: an engine per process (a forked gunicorn worker or pool
child must not share its parent's connections) and its tables created by whichever process
comes first. The second is a race: every gunicorn worker starts at once, and ``create_all``'s
check-then-create is not atomic across processes, so the loser got "table already exists" and
answered its first request 500.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Insert, MetaData, Table, create_engine, make_url
from sqlalchemy.exc import SQLAlchemyError


class NormalSyncConnection(sqlite3.Connection):
    """A SQLite connection with ``synchronous=NORMAL``: in WAL mode (fleet.celery_app puts the
    results file in it) a commit is then not an fsync. A crashed process loses nothing; a power
    cut may lose the last commits, never the file. An fsync per commit held a threaded pool's
    result writes (STARTED and SUCCESS, one writer at a time) to about 100 tasks/s here.
    Passed as ``sqlite3.connect``'s ``factory``, so every engine gets it through its connect_args."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA synchronous=NORMAL")


def sqlite_connect_args(timeout: float) -> dict[str, Any]:
    """``connect_args`` for a SQLAlchemy SQLite engine of fleet's: bounded lock waits, NORMAL sync."""
    return {"timeout": timeout, "factory": NormalSyncConnection}


def ensure_wal(path: str, timeout: float = 30) -> None:
    """Put the SQLite file at ``path`` in WAL mode (it stays so), so many processes can write
    without "database is locked". Switching needs the file to itself and does not wait on
    SQLite's busy timeout: processes starting together (gunicorn's workers) retry until one
    has switched it; then the others find it switched."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with closing(sqlite3.connect(path, timeout=timeout)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def dialect_insert(dialect: str, table: Table) -> Any:
    """An ``INSERT`` on ``table`` that can say ``ON CONFLICT``: PostgreSQL's for ``"postgresql"``,
    else SQLite's (the two dialects fleet stores in; core's plain Insert has no conflict clause)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def insert_or_ignore(engine: Engine, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` on ``table``'s primary key, in ``engine``'s dialect
    (PostgreSQL or SQLite): a row that is already there is the answer, not an error."""
    insert = dialect_insert(engine.dialect.name, table)
    return insert.on_conflict_do_nothing(index_elements=list(table.primary_key.columns))


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """``metadata``'s tables, tolerating another process creating them at the same moment."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except SQLAlchemyError:  # created between our check and our create: the second check sees it
        metadata.create_all(engine, checkfirst=True)


class ProcessEngine:
    """One engine per process for ``url``, with ``metadata``'s tables created on first use.

    ``timeout`` bounds the wait for a locked SQLite database or a PostgreSQL connect.
    """

    def __init__(self, url: str, metadata: MetaData, *, timeout: float = 30) -> None:
        self.url = url
        self.metadata = metadata
        self.timeout = timeout
        self._engine: Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def __call__(self) -> Engine:
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                self._engine = self._create()
                self._pid = os.getpid()
            return self._engine

    def _create(self) -> Engine:
        if self.sqlite:
            database = make_url(self.url).database
            if database:  # a fresh var/ (a CLI command before any worker ran)
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            args = sqlite_connect_args(self.timeout)
        elif self.url.startswith("postgres"):
            args = {"connect_timeout": max(1, round(self.timeout))}
        else:
            args = {}
        engine = create_engine(self.url, connect_args=args, pool_pre_ping=not self.sqlite)
        create_tables(engine, self.metadata)
        return engine
