"""The OpenAPI 3.1 description of every endpoint, generated from the pydantic schemas.

The operation table below is the one list of what the API serves; a test
checks it against Flask's URL map, so a route cannot go undocumented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from fleet.api import schemas as s
from fleet.api.errors import RETRY_AFTER
from fleet.api.state import api_state

bp = Blueprint("openapi", __name__)

ID_SCHEMA = TypeAdapter(s.Id).json_schema()
TASK_ID_SCHEMA = TypeAdapter(s.TaskId).json_schema()
JSON_ERRORS = (400, 401, 409, 413, 415, 422, 503)
STATUS_TEXT = {
    200: "OK",
    202: "Accepted: RabbitMQ confirmed the message(s)",
    400: "Malformed JSON",
    401: "Missing or invalid bearer token",
    404: "Unknown route, task or task id",
    409: "A request with this Idempotency-Key is still in progress; or a thread-pool task cannot be terminated",
    413: "Body larger than FLEET_API_MAX_BODY_BYTES",
    415: "Content-Type is not application/json",
    422: "Invalid fields (named in details)",
    503: "Broker (or result backend) unavailable; nothing was accepted; retry after Retry-After",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    body_required: bool = True
    ok: int = 200
    #: other success statuses answered with the same schema
    also_ok: tuple[int, ...] = ()
    answer: type[BaseModel] | None = None
    errors: tuple[int, ...] = (401, 503)
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    open: bool = False
    idempotent: bool = False
    content_type: str = "application/json"


def _enqueue(path: str, summary: str, body: type[BaseModel], required: bool = True, **params: Any) -> Operation:
    return Operation(
        "post",
        path,
        summary,
        "enqueue",
        body=body,
        body_required=required,
        ok=202,
        answer=s.Accepted,
        errors=JSON_ERRORS + ((404,) if params or body is s.TaskRequest else ()),
        path_params=params,
        idempotent=True,
    )


def _by_task_id(method: str, path: str, summary: str, answer: type[BaseModel], **more: Any) -> Operation:
    ok = 202 if method == "post" else 200
    more.setdefault("errors", (401, 404, 422, 503))
    return Operation(
        method, path, summary, "status", ok=ok, answer=answer, path_params={"task_id": TASK_ID_SCHEMA}, **more
    )


OPERATIONS: tuple[Operation, ...] = (
    _enqueue("/api/tasks", "Enqueue any registered public task by name", s.TaskRequest),
    Operation(
        "post",
        "/run-task",
        'Guide 000: {"duration": n} runs tasks.long_running_task (answers status "Task started"); '
        '{"task": ...} is POST /api/tasks',
        "enqueue",
        body=s.AnyRunTaskRequest,
        body_required=False,
        ok=202,
        answer=s.Accepted,
        errors=(*JSON_ERRORS, 404),
        idempotent=True,
    ),
    Operation(
        "post",
        "/api/tasks/batch",
        "Enqueue many tasks; 202 once RabbitMQ confirmed every one",
        "enqueue",
        body=s.BatchRequest,
        ok=202,
        answer=s.BatchAccepted,
        errors=JSON_ERRORS,
        idempotent=True,
    ),
    _enqueue("/api/send-email", "Send one email", s.SendEmailRequest),
    _enqueue("/api/send-bulk-emails", "Send one email per recipient", s.SendBulkEmailsRequest),
    _enqueue(
        "/api/process-data/{data_id}",
        "Process a data set (reports PROGRESS)",
        s.ProcessDataRequest,
        False,
        data_id=ID_SCHEMA,
    ),
    _enqueue("/api/generate-report", "Generate a CSV report", s.GenerateReportRequest),
    _enqueue(
        "/api/etl/single/{source_id}", "Run the ETL chain for one source", s.EtlRequest, False, source_id=ID_SCHEMA
    ),
    _enqueue("/api/etl/parallel", "Run the ETL chain per source in parallel, then aggregate", s.ParallelEtlRequest),
    _by_task_id("get", "/api/task-status/{task_id}", "A task's state, progress, result or error", s.TaskStatus),
    _by_task_id(
        "get", "/task-status/{task_id}", "Guide 000's shape: status is the state, result the value", s.RunTaskStatus
    ),
    _by_task_id(
        "post",
        "/api/task-cancel/{task_id}",
        "Cancel: a queued task never runs; terminate stops a running one (prefork); 200 if already finished",
        s.CancelAccepted,
        also_ok=(200,),
        body=s.CancelRequest,
        body_required=False,
        errors=(400, 401, 404, 409, 413, 415, 422, 503),
    ),
    Operation(
        "get", "/api/monitoring/workers", "Workers with active, reserved, concurrency", "monitoring", answer=s.Workers
    ),
    Operation(
        "get", "/api/monitoring/queues", "Ready, consumers and dead letters per queue", "monitoring", answer=s.Queues
    ),
    Operation(
        "get",
        "/api/monitoring/health",
        "200 when the broker answers and a worker replies, else 503",
        "monitoring",
        answer=s.MonitoringHealth,
        errors=(503,),
        open=True,
    ),
    Operation("get", "/healthz", "Liveness: the process serves", "probes", answer=s.Health, errors=(), open=True),
    Operation("get", "/readyz", "Readiness: RabbitMQ answers", "probes", answer=s.Health, errors=(503,), open=True),
    Operation("get", "/metrics", "Prometheus metrics", "probes", errors=(), open=True, content_type="text/plain"),
    Operation("get", "/api/openapi.json", "This document", "probes", errors=(401,)),
)


def _components(task_names: tuple[str, ...], max_delay: float) -> dict[str, Any]:
    models: set[type[BaseModel]] = {s.Error}
    for op in OPERATIONS:
        models.update(model for model in (op.body, op.answer) if model is not None)
    ordered = sorted(models, key=lambda model: model.__name__)
    _, top = models_json_schema(
        [(model, "validation" if model.__name__.endswith("Request") else "serialization") for model in ordered],
        ref_template="#/components/schemas/{model}",
    )
    components = top.get("$defs", {})
    # What this deployment accepts: its registered tasks, and delays up to FLEET_API_MAX_DELAY.
    request = components["TaskRequest"]["properties"]
    request["task"]["enum"] = list(task_names)
    request["countdown"]["anyOf"][0]["maximum"] = max_delay
    return components


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _responses(op: Operation) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": STATUS_TEXT[op.ok]}
    if op.content_type == "application/json":
        ok["content"] = {"application/json": {"schema": _ref(op.answer) if op.answer else {"type": "object"}}}
    else:
        ok["content"] = {op.content_type: {"schema": {"type": "string"}}}
    if op.ok == 202 and op.answer is s.Accepted:
        ok["headers"] = {"Location": {"description": "The status URL", "schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.ok): ok}
    for status in op.also_ok:
        responses[str(status)] = {"description": STATUS_TEXT[status], "content": ok["content"]}
    for status in (*op.errors, 405):
        if status == 503 and op.answer in (s.MonitoringHealth, s.Health):
            content = {"application/json": {"schema": _ref(op.answer)}}
        else:
            content = {"application/json": {"schema": _ref(s.Error)}}
        response: dict[str, Any] = {"description": STATUS_TEXT.get(status, "Method not allowed"), "content": content}
        if status == 503:
            response["headers"] = {"Retry-After": {"description": "Seconds", "schema": {"type": "string"}}}
        responses[str(status)] = response
    return responses


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": _responses(op),
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": schema} for name, schema in op.path_params.items()
    ]
    if op.idempotent:
        parameters.append(
            {
                "name": s.IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": "Retrying with the same key returns the first answer instead of enqueueing again.",
                "schema": TypeAdapter(s.IdempotencyKey).json_schema(),
            }
        )
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        doc["requestBody"] = {"required": op.body_required, "content": {"application/json": {"schema": _ref(op.body)}}}
    if op.open:
        doc["security"] = []
    return doc


@cache
def document(task_names: tuple[str, ...], max_delay: float) -> dict[str, Any]:
    """The document for a fleet registering ``task_names`` and capping delays at ``max_delay`` seconds."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fleet API",
            "version": "1.0.0",
            "description": (
                "Enqueue work on the fleet. A 202 is answered only after RabbitMQ confirmed the message; "
                f"a 503 carries Retry-After ({RETRY_AFTER} s) and means nothing was accepted. "
                "Every error has the Error shape."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _components(task_names, max_delay),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/api/openapi.json")
def openapi_json() -> Response:
    state = api_state()
    return jsonify(document(tuple(sorted(state.public_tasks)), state.settings.api_max_delay))
