"""Whether a task's result is stored, read straight from the result backend (SQLite or Redis).

The `results` scenario's clock stops when every result of a run is stored, so it
asks the backend itself, cheaply: one query or one MGET for the ids still
pending, never a Celery ``AsyncResult`` per task.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

import redis

SQLITE_PREFIX = "db+sqlite:///"
REDIS_KEY = "celery-task-meta-"  # Celery's Redis backend key for a task's meta
CHUNK = 500  # ids per query (SQLite allows 32,766 parameters; MGET has no limit worth hitting)


class Results:
    """The SUCCESS results among given task ids, in one backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith(SQLITE_PREFIX):
            self.path = url.removeprefix(SQLITE_PREFIX)
            self.client = None
        elif url.startswith("redis://"):
            self.client = redis.Redis.from_url(url)
        else:
            raise ValueError(f"the bench reads SQLite (db+sqlite:///...) and Redis results, not {url!r}")

    def succeeded(self, task_ids: Iterable[str]) -> set[str]:
        ids = list(task_ids)
        found: set[str] = set()
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            found |= self._sqlite(chunk) if self.client is None else self._redis(chunk)
        return found

    def _sqlite(self, ids: list[str]) -> set[str]:
        try:
            with sqlite3.connect(self.path, timeout=30) as connection:
                marks = ",".join("?" * len(ids))
                query = f"SELECT task_id FROM celery_taskmeta WHERE status = 'SUCCESS' AND task_id IN ({marks})"
                rows = connection.execute(query, ids).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # no worker has written a result yet
                return set()
            raise
        return {row[0] for row in rows}

    def _redis(self, ids: list[str]) -> set[str]:
        assert self.client is not None
        values = self.client.mget([REDIS_KEY + task_id for task_id in ids])
        pairs = zip(ids, values, strict=True)
        return {task_id for task_id, value in pairs if value and json.loads(value)["status"] == "SUCCESS"}

    def forget(self, task_ids: Iterable[str]) -> None:
        """Delete these results from a shared Redis (SQLite files live in the run's scratch directory)."""
        if self.client is not None:
            ids = list(task_ids)
            for start in range(0, len(ids), CHUNK):
                self.client.delete(*(REDIS_KEY + task_id for task_id in ids[start : start + CHUNK]))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
