"""Task status and cancellation.

Status reads the result backend once. Celery cannot tell a queued task from an
id nobody ever sent (both are PENDING with no record); the answer says so
(``known: false``) instead of pretending. With ``result_extended`` the backend
also tells the task name, queue and worker once a worker took it.
"""

from __future__ import annotations

import time
from typing import Any

from celery import states
from flask import Blueprint, Response, jsonify
from kombu import Producer
from pydantic import TypeAdapter, ValidationError

from fleet.api.body import validation_error
from fleet.api.enqueue import publish_failed, record_published
from fleet.api.errors import unavailable
from fleet.api.schemas import CancelAccepted, TaskError, TaskId, TaskStatus
from fleet.api.state import ApiState, api_state
from fleet.progress import PROGRESS
from fleet.publish import BrokerUnavailable

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


def read_status(state: ApiState, task_id: str) -> TaskStatus:
    try:
        meta = state.celery.backend.get_task_meta(task_id)
    except Exception as exc:  # noqa: BLE001 - database locked, Redis down, ...
        raise unavailable(f"the result backend did not answer: {exc!r}", "result_backend_unavailable") from None
    state_name = meta.get("status") or states.PENDING
    value = meta.get("result")
    status = STATUS_TEXT.get(state_name, state_name.lower())
    error = _error(value)
    if error is not None and state_name in (states.FAILURE, states.RETRY):
        status = f"{status}: {error.type}: {error.message}"
    progress = value if state_name == PROGRESS and isinstance(value, dict) else None
    return TaskStatus(
        task_id=task_id,
        state=state_name,
        status=status,
        known=state_name != states.PENDING or meta.get("date_done") is not None,
        task=meta.get("name"),
        queue=meta.get("queue"),
        worker=meta.get("worker"),
        retries=meta.get("retries"),
        progress=progress,
        result=value if state_name == states.SUCCESS else None,
        error=error,
        date_done=meta.get("date_done"),
    )


# Registered after the /api/ rule on purpose: url_for() builds the /api/ form.
@bp.get("/task-status/<task_id>")
@bp.get("/api/task-status/<task_id>")
def task_status(task_id: str) -> Response:
    status = read_status(api_state(), checked_id(task_id))
    return jsonify(status.model_dump(mode="json"))


def _revoke(state: ApiState, producer: Producer, task_id: str, confirm_timeout: float) -> None:
    """Broadcast Celery's ``revoke`` control command on our confirm-mode producer.

    ``control.revoke()`` would publish through Celery's own pool with retries
    and no deadline; this is the same pidbox message, bounded like every publish.
    """
    mailbox = state.celery.control.mailbox
    producer.publish(
        {
            "method": "revoke",
            "arguments": {"task_id": task_id, "terminate": False, "signal": None},
            "destination": None,
            "pattern": None,
            "matcher": None,
        },
        exchange=mailbox.exchange.name,
        declare=[mailbox.exchange],
        headers={"clock": mailbox.clock.forward(), "expires": 0},
        serializer="json",
        retry=False,
        confirm_timeout=confirm_timeout,
    )


@bp.post("/api/task-cancel/<task_id>")
def task_cancel(task_id: str) -> Response:
    """Revoke: a task still queued or waiting on its countdown never runs; a running one finishes."""
    state = api_state()
    task_id = checked_id(task_id)
    started = time.perf_counter()
    try:
        state.publisher.run(lambda producer, timeout: _revoke(state, producer, task_id, timeout))
    except BrokerUnavailable as exc:
        raise publish_failed("revoke", started, exc) from None
    record_published(state, "revoke", started, [])
    current = read_status(state, task_id)
    body = CancelAccepted(
        task_id=task_id,
        state=current.state,
        status="revoke sent to every worker; a task that has not started will not run",
    )
    response = jsonify(body.model_dump(mode="json"))
    response.status_code = 202
    return response
