"""Celery's database result backend with one engine per process.

Celery's ``SessionManager`` caches engines only after a fork; in an unforked
process (a threaded pool, the API, beat) every result read or write builds a
new SQLAlchemy engine on a ``NullPool`` and so a new connection. Here each
process keeps one engine and session factory per URL, rebuilt in a forked child
(keyed by pid) so no connection is shared across a fork.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery.backends.database import DatabaseBackend
from celery.backends.database.session import SessionManager
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker


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


class PooledDatabaseBackend(DatabaseBackend):
    """``DatabaseBackend`` whose sessions come from one pooled engine per process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_manager = PooledSessionManager(engine_callback=self.session_manager.engine_callback)
