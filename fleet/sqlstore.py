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
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, make_url
from sqlalchemy.exc import SQLAlchemyError


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """``metadata``'s tables, tolerating another process creating them at the same moment."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except SQLAlchemyError:  # created between our check and our create: the second check sees it
        metadata.create_all(engine, checkfirst=True)


class ProcessEngine:
    """One engine per process for ``url``, with ``metadata``'s tables created on first use.

    ``timeout`` bounds the wait for a locked SQLite database or a PostgreSQL connect;
    ``on_connect`` runs on every new DBAPI connection (a PRAGMA, say).
    """

    def __init__(
        self,
        url: str,
        metadata: MetaData,
        *,
        timeout: float = 30,
        on_connect: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.url = url
        self.metadata = metadata
        self.timeout = timeout
        self.on_connect = on_connect
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
            args: dict[str, Any] = {"timeout": self.timeout}
        elif self.url.startswith("postgres"):
            args = {"connect_timeout": max(1, round(self.timeout))}
        else:
            args = {}
        engine = create_engine(self.url, connect_args=args, pool_pre_ping=not self.sqlite)
        if self.on_connect is not None:
            event.listen(engine, "connect", self.on_connect)
        create_tables(engine, self.metadata)
        return engine
