"""The operator API, ``/api/ops/*``: queues, dead letters, scheduled work, workers, recent tasks,
pause and resume. Reading needs a ``read`` (or ``operate``) token, acting an ``operate`` token
(fleet.api.auth); every action is logged with the token's name. The work is done by fleet.ops.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError

from fleet.api import ops_schemas as o
from fleet.api.auth import audit, caller, needs
from fleet.api.body import validated, validation_error
from fleet.api.errors import ApiError
from fleet.api.state import api_state
from fleet.ops import gather

bp = Blueprint("ops", __name__)


def _answer(model: type[BaseModel], data: Any) -> Response:
    return jsonify(model.model_validate(data).model_dump(mode="json"))


def _query(model: type[o.Query]) -> Any:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise validation_error(exc) from None


def _task_id(task_id: str) -> str:
    if not 1 <= len(task_id) <= 155:
        raise ApiError(
            422, "validation_error", "task_id: 1 to 155 characters", [{"field": "task_id", "message": "length"}]
        )
    return task_id


@bp.get("/api/ops/queues")
def queues() -> Response:
    rows = gather.queue_rows(api_state())
    return _answer(o.OpsQueues, {"queues": [row.as_dict() for row in rows]})


@bp.post("/api/ops/queues/<queue>/pause")
@needs("operate")
def pause(queue: str) -> Response:
    gather.pause(api_state(), queue, caller().name)
    audit("pause", queue=queue)
    return _answer(o.PauseState, {"queue": queue, "paused": True, "paused_by": caller().name})


@bp.post("/api/ops/queues/<queue>/resume")
@needs("operate")
def resume(queue: str) -> Response:
    was = gather.resume(api_state(), queue)
    audit("resume", queue=queue, was_paused=was)
    return _answer(o.PauseState, {"queue": queue, "paused": False, "paused_by": None})


@bp.get("/api/ops/dead-letters/<queue>")
def dead_letters(queue: str) -> Response:
    query = _query(o.PageQuery)
    return _answer(o.DeadLetterPage, gather.dead_letter_page(api_state(), queue, query.limit, query.offset))


@bp.post("/api/ops/dead-letters/<queue>/replay")
@needs("operate")
def replay(queue: str) -> Response:
    gather.known_queue(queue)
    body = validated(o.ReplayRequest)
    moved = gather.replay(api_state(), queue, body.task_ids)
    audit("replay", queue=queue, task_ids="all" if body.all else ",".join(body.task_ids or ()), replayed=moved)
    return _answer(o.Replayed, {"queue": queue, "replayed": moved})


@bp.delete("/api/ops/dead-letters/<queue>/<task_id>")
@needs("operate")
def delete_one(queue: str, task_id: str) -> Response:
    deleted = gather.delete(api_state(), queue, [_task_id(task_id)])
    if not deleted:
        raise ApiError(404, "unknown_dead_letter", f"no dead letter {task_id} in {queue}.dlq")
    audit("delete dead letter", queue=queue, task_id=task_id)
    return _answer(o.Deleted, {"queue": queue, "deleted": deleted})


@bp.delete("/api/ops/dead-letters/<queue>")
@needs("operate")
def delete_all(queue: str) -> Response:
    gather.known_queue(queue)
    body = validated(o.DeleteAllRequest)
    if body.confirm != queue:
        raise ApiError(
            422,
            "validation_error",
            f"confirm: must repeat the queue's name ({queue!r}) to delete all its dead letters",
            [{"field": "confirm", "message": "must equal the queue in the path"}],
        )
    deleted = gather.delete(api_state(), queue, None)
    audit("delete all dead letters", queue=queue, deleted=deleted)
    return _answer(o.Deleted, {"queue": queue, "deleted": deleted})


@bp.get("/api/ops/scheduled")
def scheduled() -> Response:
    return _answer(o.Scheduled, {"items": gather.scheduled_items(api_state())})


@bp.post("/api/ops/scheduled/<task_id>/cancel")
@needs("operate")
def cancel(task_id: str) -> Response:
    unparked = gather.cancel(api_state(), _task_id(task_id))
    audit("cancel scheduled", task_id=task_id, unparked=unparked)
    words = "removed from its delay queue and revoked" if unparked else "revoked: a worker holding it discards it"
    return _answer(o.Cancelled, {"task_id": task_id, "unparked": unparked, "status": words})


@bp.get("/api/ops/workers")
def workers() -> Response:
    return _answer(o.OpsWorkers, {"pools": gather.worker_pools(api_state())})


@bp.get("/api/ops/tasks")
def tasks() -> Response:
    query = _query(o.TasksQuery)
    return _answer(o.TaskPage, gather.recent_tasks(api_state(), **query.model_dump()))
