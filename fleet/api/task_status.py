"""Task status (in both guides' shapes) and cancellation.

Status reads the result backend. Celery cannot tell a queued task from an id
nobody ever sent (both are PENDING with no record); for a PENDING id the API
also asks its record of accepted ids (:mod:`fleet.api.accepted`) and says
``known: true|false`` instead of pretending. With ``result_extended`` the
backend also tells the task name, queue and worker once a worker took it.

Cancel tells three phases apart. Finished: the result backend has a final
state. Running: STARTED/PROGRESS there, or a worker reports it active.
Queued: any other recorded state, an id the API accepted, or one a worker
holds reserved or waiting on its ETA. Anything else is an id nobody knows: 404,
and nothing is broadcast (Celery's workers would store REVOKED for it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import states
from flask import Blueprint, Response, jsonify
from kombu import Producer
from pydantic import TypeAdapter, ValidationError

from fleet.api.auth import needs
from fleet.api.body import validated, validation_error
from fleet.api.enqueue import publish_failed, record_published
from fleet.api.errors import ApiError, unavailable
from fleet.api.schemas import (
    STATUS_PATH,
    CancelAccepted,
    CancelRequest,
    RunTaskStatus,
    TaskError,
    TaskId,
    TaskStatus,
)
from fleet.api.state import ApiState, api_state
from fleet.ops.control import broadcast
from fleet.progress import PROGRESS
from fleet.publish import BrokerUnavailable

logger = logging.getLogger("fleet.api")
bp = Blueprint("status", __name__)
_task_id = TypeAdapter(TaskId)

STATUS_TEXT = {
    states.PENDING: "waiting in a queue, or unknown: no worker has reported on this id yet",
    states.RECEIVED: "received by a worker",
    states.STARTED: "running",
    PROGRESS: "running, reporting progress",
    states.SUCCESS: "completed",
    states.FAILURE: "failed",
    states.RETRY: "failed, will be retried",
    states.REVOKED: "cancelled (revoked): it will not run",
    states.REJECTED: "rejected by the worker (dead-lettered)",
    states.IGNORED: "ignored",
}


def checked_id(task_id: str) -> str:
    try:
        return _task_id.validate_python(task_id)
    except ValidationError as exc:
        error = validation_error(exc)
        error.details = [{"field": "task_id", "message": detail["message"]} for detail in error.details]
        error.message = "invalid fields: task_id"
        raise error from None


def _error(value: Any) -> TaskError | None:
    if isinstance(value, BaseException):
        return TaskError(type=type(value).__name__, message=str(value))
    return None


def accepted(state: ApiState, task_id: str) -> bool:
    """Whether the API accepted ``task_id`` (False when that record is unavailable)."""
    if state.accepted is None:
        return False
    try:
        return state.accepted.known(task_id)
    except Exception as exc:  # noqa: BLE001 - the workers can still tell
        logger.warning("could not read the accepted task ids: %r", exc)
        return False


def read_meta(state: ApiState, task_id: str) -> dict[str, Any]:
    try:
        return state.celery.backend.get_task_meta(task_id)
    except Exception as exc:  # noqa: BLE001 - database locked, Redis down, ...
        raise unavailable(f"the result backend did not answer: {exc!r}", "result_backend_unavailable") from None


def read_status(state: ApiState, task_id: str) -> TaskStatus:
    meta = read_meta(state, task_id)
    state_name = meta.get("status") or states.PENDING
    value = meta.get("result")
    status = STATUS_TEXT.get(state_name, state_name.lower())
    error = _error(value)
    if error is not None and state_name in (states.FAILURE, states.RETRY):
        status = f"{status}: {error.type}: {error.message}"
    progress = value if state_name == PROGRESS and isinstance(value, dict) else None
    finished = state_name in states.READY_STATES
    known = state_name != states.PENDING or meta.get("date_done") is not None or accepted(state, task_id)
    if state_name == states.PENDING and known:
        status = "queued: accepted, waiting for a worker"
    return TaskStatus(
        task_id=task_id,
        state=state_name,
        status=status,
        known=known,
        task=meta.get("name"),
        queue=meta.get("queue"),
        worker=meta.get("worker"),
        retries=meta.get("retries"),
        progress=progress,
        result=value if state_name == states.SUCCESS else None,
        error=error.message if error is not None else None,
        exception=error,
        # The SQL backend stamps every update of a row (its column has onupdate=now): only a
        # finished task has a date_done.
        date_done=meta.get("date_done") if finished else None,
    )


@bp.get(f"{STATUS_PATH}<task_id>")
def task_status(task_id: str) -> Response:
    """Guide 001's shape: ``state``, a ``status`` text, and ``progress``/``result``/``error``."""
    status = read_status(api_state(), checked_id(task_id))
    return jsonify(status.model_dump(mode="json"))


@bp.get("/task-status/<task_id>")
def run_task_status(task_id: str) -> Response:
    """Guide 000's shape: ``status`` is the state and ``result`` what Celery's ``AsyncResult.result`` holds
    (the return value, or the PROGRESS meta); fleet's fields follow."""
    status = read_status(api_state(), checked_id(task_id))
    body = RunTaskStatus(
        **status.model_dump(exclude={"status", "result"}),
        status=status.state,
        status_text=status.status,
        result=status.result if status.state == states.SUCCESS else status.progress,
    )
    return jsonify(body.model_dump(mode="json"))


def _revoke(state: ApiState, producer: Producer, task_id: str, terminate: bool, confirm_timeout: float) -> None:
    """Broadcast Celery's ``revoke`` control command on our confirm-mode producer (fleet.ops.control)."""
    arguments = {"task_id": task_id, "terminate": terminate, "signal": None}
    broadcast(state.celery, producer, "revoke", arguments, confirm_timeout)


def held_by_workers(state: ApiState, task_id: str) -> str | None:
    """``"running"`` or ``"queued"`` if a worker holds ``task_id`` (active, or reserved/waiting on its ETA)."""
    try:
        with state.publisher.fresh_connection() as connection:
            inspect = state.celery.control.inspect(timeout=state.settings.api_inspect_timeout, connection=connection)
            replies = inspect.query_task(task_id) or {}
    except Exception as exc:  # noqa: BLE001 - broker gone mid-way: the answer would be a guess
        raise unavailable(f"could not ask the workers about {task_id}: {exc!r}") from None
    found = [info[0] for reply in replies.values() for info in (reply or {}).values()]
    if "active" in found:
        return "running"
    return "queued" if found else None


def phase_of(state: ApiState, task_id: str, state_name: str) -> str | None:
    """queued / running / finished, or None for an id nobody knows (see the module docstring)."""
    if state_name in states.READY_STATES:
        return "finished"
    if state_name in (states.STARTED, PROGRESS):
        return "running"
    if state_name != states.PENDING:  # RECEIVED, RETRY (waiting on its countdown), a custom state
        return "queued"
    if accepted(state, task_id):
        return "queued"
    return held_by_workers(state, task_id)


def store_revoked(state: ApiState, task_id: str) -> None:
    """Store REVOKED for a queued task before the broadcast, once, here.

    Every worker that gets the revoke would otherwise store it for a task it
    has not seen, all at the same moment, and the SQL backend's losers log
    UNIQUE-constraint tracebacks; a worker finds the state already final and
    leaves it. The worker that later receives the message discards it.
    """
    state.celery.backend.mark_as_revoked(task_id, reason="revoked")


@bp.post("/api/task-cancel/<task_id>")
@needs("enqueue", "operate")  # a client cancels what it sent, an operator anything; a read token nothing
def task_cancel(task_id: str) -> Response:
    """Cancel: a queued task never runs; a running one is terminated with ``{"terminate": true}``
    (prefork pools; Celery cannot stop a thread), else it finishes. 404 for an id nobody knows."""
    state = api_state()
    task_id = checked_id(task_id)
    request_body = validated(CancelRequest)
    current = read_status(state, task_id)
    phase = phase_of(state, task_id, current.state)
    if phase is None:
        raise ApiError(
            404,
            "unknown_task_id",
            f"no task {task_id} is known: the API did not accept it, no worker holds it and no result "
            "records it (a task published around the API is known once a worker takes it)",
            [{"field": "task_id", "message": "unknown"}],
        )
    if phase == "finished":
        body = CancelAccepted(
            task_id=task_id,
            state=current.state,
            was=phase,
            terminate=False,
            status="already finished: nothing to cancel",
        )
        return jsonify(body.model_dump(mode="json"))
    # prefork signals the task's child; a fleet worker's thread gets an exception (fleet.worker.limits)
    terminate = request_body.terminate and phase == "running"
    if phase == "queued":
        try:
            store_revoked(state, task_id)
        except Exception as exc:  # noqa: BLE001 - e.g. a worker stored STARTED this very moment
            logger.warning("could not store REVOKED for %s before revoking: %r", task_id, exc)
    started = time.perf_counter()
    try:
        state.publisher.run(lambda producer, timeout: _revoke(state, producer, task_id, terminate, timeout))
    except BrokerUnavailable as exc:
        if phase == "queued":
            state.celery.backend.forget(task_id)  # not revoked after all: back to what it was
        raise publish_failed("revoke", started, exc) from None
    record_published(state, "revoke", started, [])
    if phase == "queued":
        words = "revoked: it will not run"
    elif terminate:
        words = "running: revoked and its process terminated"
    else:
        words = "running: revoked, it will finish (send terminate: true to stop it)"
    body = CancelAccepted(task_id=task_id, state=current.state, was=phase, terminate=terminate, status=words)
    response = jsonify(body.model_dump(mode="json"))
    response.status_code = 202
    return response
