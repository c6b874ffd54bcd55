"""Recent tasks from the result backend's ``result_extended`` rows (SQL backends only).

A row says the state, task name, queue, worker, retries, when it finished (or, while it runs,
when it started: ``task_track_started``), its args and the exception it failed with. Celery's
rows keep one time per task, so runtimes are the ``fleet_task_runtime_seconds`` metric's job.
A Redis backend has no query: the API answers 501 and says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import states

from fleet.progress import PROGRESS

#: states an operator may filter on
STATES = (states.PENDING, states.STARTED, PROGRESS, states.RETRY, states.SUCCESS, states.FAILURE, states.REVOKED)


class NoTaskQuery(Exception):
    """The result backend cannot list tasks (e.g. Redis)."""


def _decoded(backend: Any, raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return backend.decode(raw)
    except Exception:  # noqa: BLE001 - a row another serializer wrote: show nothing rather than fail the page
        return None


def _exception(backend: Any, status: str, result: Any) -> dict[str, str] | None:
    """Type and message as ``str(exc)`` gives them (what fleet.dlq shows for a dead letter too)."""
    if status != states.FAILURE or not isinstance(result, dict) or "exc_type" not in result:
        return None
    try:
        exc = backend.exception_to_python(result)
    except Exception:  # noqa: BLE001 - an exception type this process cannot rebuild: its stored words
        return {"type": str(result["exc_type"]), "message": str(result.get("exc_message"))}
    return {"type": str(result["exc_type"]), "message": str(exc)}


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.replace(tzinfo=when.tzinfo or UTC).isoformat()


def recent(
    backend: Any,
    state: str | None = None,
    task: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """``{"total", "items"}``: the newest task rows first, filtered as asked."""
    if not hasattr(backend, "ResultSession"):
        raise NoTaskQuery(
            f"the {type(backend).__name__} result backend cannot list tasks: listing needs a SQL result "
            "backend (the default SQLite file, or PostgreSQL via CELERY_RESULT_BACKEND=db+postgresql://...)"
        )
    from celery.backends.database.models import TaskExtended

    session = backend.ResultSession()
    try:
        query = session.query(TaskExtended)
        if state:
            query = query.filter(TaskExtended.status == state)
        if task:
            query = query.filter(TaskExtended.name == task)
        if queue:
            query = query.filter(TaskExtended.queue == queue)
        if since:
            query = query.filter(TaskExtended.date_done >= since.astimezone(UTC).replace(tzinfo=None))
        total = query.count()
        rows = query.order_by(TaskExtended.date_done.desc()).offset(offset).limit(limit).all()
        items = []
        for row in rows:
            running = row.status in (states.STARTED, PROGRESS)
            items.append(
                {
                    "task_id": row.task_id,
                    "state": row.status,
                    "task": row.name,
                    "queue": row.queue,
                    "worker": row.worker,
                    "retries": row.retries,
                    "started": _iso(row.date_done) if running else None,
                    "finished": None if running else _iso(row.date_done),
                    "args": str(_decoded(backend, row.args))[:80] if row.args is not None else None,
                    "exception": _exception(backend, row.status, _decoded(backend, row.result)),
                }
            )
        return {"total": total, "limit": limit, "offset": offset, "items": items}
    finally:
        session.close()
