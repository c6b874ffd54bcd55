"""Celery's database result backend with one engine per process and one statement per write.

Celery's ``SessionManager`` caches engines only after a fork; in an unforked
process (a threaded pool, the API, beat) every result read or write builds a
new SQLAlchemy engine on a ``NullPool`` and so a new connection. Here each
process keeps one engine and session factory per URL, rebuilt in a forked child
(keyed by pid) so no connection is shared across a fork.

Celery stores a state through an ORM session: SELECT the row, SELECT it again
FOR UPDATE, INSERT or UPDATE it, commit. With ``task_track_started`` that is
twice per task, and it was most of a short task's cost. On SQLite and
PostgreSQL a write here is one ``INSERT ... ON CONFLICT (task_id) DO UPDATE``
and its commit, with the values Celery's own ``_update_result`` computes and
Celery's rules kept in the statement: a stored SUCCESS is never written over,
stamps stay when a write has none, and ``date_done`` ends as the ORM left it
(see :meth:`PooledDatabaseBackend._upsert`). Rows read back through Celery's
``get_task_meta`` as before; other dialects keep Celery's path.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from typing import Any

from celery import states
from celery.backends.database import DatabaseBackend
from celery.backends.database.session import SessionManager
from sqlalchemy import and_, bindparam, case, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.sql import Executable

from fleet.sqlstore import dialect_insert

#: the dialects :meth:`PooledDatabaseBackend._store_result` writes with one upsert
UPSERT_DIALECTS = frozenset({"sqlite", "postgresql"})
_KEEP = object()  # a column Celery's _update_result left as the row has it


class PooledSessionManager(SessionManager):
    """A ``SessionManager`` caching one engine and session factory per process and URL."""

    def __init__(self, engine_callback: Any = None) -> None:
        super().__init__(engine_callback)
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _current(self) -> None:
        """Forget the parent's engines in a forked child (without closing its connections)."""
        if self._pid != os.getpid():
            for engine in self._engines.values():
                engine.dispose(close=False)
            self._engines, self._sessions, self._pid = {}, {}, os.getpid()

    def get_engine(self, dburi: str, **kwargs: Any) -> Engine:
        with self._lock:
            self._current()
            engine = self._engines.get(dburi)
            if engine is None:
                engine = create_engine(dburi, **kwargs)
                if self.engine_callback is not None:
                    self.engine_callback(engine)
                self._engines[dburi] = engine
            return engine

    def create_session(self, dburi: str, short_lived_sessions: bool = False, **kwargs: Any) -> tuple[Engine, Any]:
        engine = self.get_engine(dburi, **kwargs)
        with self._lock:
            factory = self._sessions.get(dburi)
            if factory is None or short_lived_sessions:
                factory = self._sessions[dburi] = sessionmaker(bind=engine)
            return engine, factory


class _Columns:
    """Stands in for the ORM row in Celery's ``_update_result``, which sets every column it writes on it."""

    children = None
    stamps = _KEEP  # left alone (kept) unless the write carries stamped headers


class PooledDatabaseBackend(DatabaseBackend):
    """``DatabaseBackend`` whose sessions come from one pooled engine per process, writing with one upsert."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_manager = PooledSessionManager(engine_callback=self.session_manager.engine_callback)
        self._statements: dict[tuple[str, ...], Executable] = {}
        self._state_query: Executable | None = None

    def engine(self) -> Engine:
        """This process's engine, with Celery's tables created (as its first session would)."""
        engine = self.session_manager.get_engine(self.url, **self.engine_options)
        self.session_manager.prepare_models(engine)
        return engine

    def _store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None, **kwargs: Any
    ) -> None:
        engine = self.engine()
        if engine.dialect.name not in UPSERT_DIALECTS:
            return super()._store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)
        row = _Columns()
        self._update_result(row, result, state, traceback=traceback, request=request)
        values = {name: value for name, value in vars(row).items() if value is not _KEEP}
        statement = self._upsert(engine.dialect.name, tuple(sorted(values)))
        with engine.begin() as connection:
            connection.execute(statement, {**values, "task_id": task_id, "fleet_now": datetime.now(UTC)})
        return None

    def _upsert(self, dialect: str, columns: tuple[str, ...]) -> Executable:
        """The write of ``columns``, built once per dialect and column set (compiled once, then cached).

        Celery's ORM write, kept: an existing SUCCESS row is left as it is; the
        columns written are replaced (``stamps`` only when given). ``date_done``
        is the write's own (set for a ready state, else NULL), except that a
        non-ready write onto a row whose ``date_done`` is NULL stamps it with the
        time: the ORM then sees no change in the column and its ``onupdate=now``
        fires (a retried task's STARTED row says when the retry started).
        """
        key = (dialect, *columns)
        statement = self._statements.get(key)
        if statement is None:
            table = self.task_cls.__table__
            insert = dialect_insert(dialect, table).values(
                {name: bindparam(name, type_=table.c[name].type) for name in ("task_id", *columns)}
            )
            new = insert.excluded
            stamped = case(
                (
                    and_(new.date_done.is_(None), table.c.date_done.is_(None)),
                    bindparam("fleet_now", type_=table.c.date_done.type),
                ),
                else_=new.date_done,
            )
            changes = {name: new[name] for name in columns if name != "date_done"}
            statement = insert.on_conflict_do_update(
                index_elements=[table.c.task_id],
                set_={**changes, "date_done": stamped},
                where=table.c.status.is_distinct_from(states.SUCCESS),
            )
            self._statements[key] = statement
        return statement

    def stored_state(self, task_id: str) -> tuple[str | None, int | None]:
        """``(status, retries)`` of ``task_id`` (PENDING when nothing is stored): what fleet.worker.dedup
        decides on, read with one prebuilt SELECT instead of a session, the whole row and its decoding."""
        return self._ensure_retryable(self._stored_state, task_id)

    def _stored_state(self, task_id: str) -> tuple[str | None, int | None]:
        if self._state_query is None:
            table = self.task_cls.__table__
            retries = table.c.get("retries")  # only with result_extended
            columns = [table.c.status] if retries is None else [table.c.status, retries]
            self._state_query = select(*columns).where(table.c.task_id == bindparam("task_id"))
        with self.engine().connect() as connection:
            row = connection.execute(self._state_query, {"task_id": task_id}).first()
        if row is None:
            return states.PENDING, None
        return row[0], row[1] if len(row) > 1 else None
