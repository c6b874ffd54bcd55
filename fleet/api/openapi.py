"""The OpenAPI 3.1 description of every endpoint, generated from the pydantic schemas.

The operation table below says what each endpoint (Flask's ``blueprint.view``) answers; its
path and path parameters come from the app's URL map, so a route is stated once, where it is
registered. A test checks every route has an operation, so none goes undocumented.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from fleet.api import ops_schemas as o
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
    403: "The token's scope does not allow this (read / operate / enqueue)",
    404: "Unknown route, task or task id",
    409: "A request with this Idempotency-Key is still in progress",
    413: "Body larger than FLEET_API_MAX_BODY_BYTES",
    415: "Content-Type is not application/json",
    422: "Invalid fields (named in details)",
    501: "The result backend cannot list tasks (Redis): use a SQL result backend",
    503: "Broker (or result backend) unavailable; nothing was accepted; retry after Retry-After",
}
#: what the operator API's reads and actions may answer besides success
OPS_READ_ERRORS = (401, 403, 404, 422, 503)
OPS_ACTION_ERRORS = (400, 401, 403, 404, 413, 415, 422, 503)


@dataclass(frozen=True)
class Operation:
    method: str
    #: Flask's endpoint, ``blueprint.view``: the path is the one the view is registered under
    endpoint: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    body_required: bool = True
    ok: int = 200
    #: other success statuses answered with the same schema
    also_ok: tuple[int, ...] = ()
    answer: type[BaseModel] | None = None
    errors: tuple[int, ...] = (401, 503)
    open: bool = False
    idempotent: bool = False
    content_type: str = "application/json"
    #: the query string's parameters, each documented from this model's fields
    query: type[BaseModel] | None = None


def _enqueue(
    endpoint: str, summary: str, body: type[BaseModel], required: bool = True, by_id: bool = False
) -> Operation:
    return Operation(
        "post",
        endpoint,
        summary,
        "enqueue",
        body=body,
        body_required=required,
        ok=202,
        answer=s.Accepted,
        errors=JSON_ERRORS + ((404,) if by_id or body is s.TaskRequest else ()),
        idempotent=True,
    )


def _by_task_id(method: str, endpoint: str, summary: str, answer: type[BaseModel], **more: Any) -> Operation:
    ok = 202 if method == "post" else 200
    more.setdefault("errors", (401, 404, 422, 503))
    return Operation(method, endpoint, summary, "status", ok=ok, answer=answer, **more)


OPERATIONS: tuple[Operation, ...] = (
    _enqueue("tasks.create_task", "Enqueue any registered public task by name", s.TaskRequest),
    Operation(
        "post",
        "tasks.run_task",
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
        "tasks.create_batch",
        "Enqueue many tasks; 202 once RabbitMQ confirmed every one",
        "enqueue",
        body=s.BatchRequest,
        ok=202,
        answer=s.BatchAccepted,
        errors=JSON_ERRORS,
        idempotent=True,
    ),
    _enqueue("tasks.send_email", "Send one email", s.SendEmailRequest),
    _enqueue("tasks.send_bulk_emails", "Send one email per recipient", s.SendBulkEmailsRequest),
    _enqueue(
        "tasks.process_data",
        "Process a data set (reports PROGRESS)",
        s.ProcessDataRequest,
        False,
        by_id=True,
    ),
    _enqueue("tasks.generate_report", "Generate a CSV report", s.GenerateReportRequest),
    _enqueue("tasks.etl_single", "Run the ETL chain for one source", s.EtlRequest, False, by_id=True),
    _enqueue("tasks.etl_parallel", "Run the ETL chain per source in parallel, then aggregate", s.ParallelEtlRequest),
    _by_task_id("get", "status.task_status", "A task's state, progress, result or error", s.TaskStatus),
    _by_task_id(
        "get", "status.run_task_status", "Guide 000's shape: status is the state, result the value", s.RunTaskStatus
    ),
    _by_task_id(
        "post",
        "status.task_cancel",
        "Cancel: a queued task never runs; terminate stops a running one (prefork); 200 if already finished",
        s.CancelAccepted,
        also_ok=(200,),
        body=s.CancelRequest,
        body_required=False,
        errors=(400, 401, 404, 409, 413, 415, 422, 503),
    ),
    Operation(
        "get", "monitoring.workers", "Workers with active, reserved, concurrency", "monitoring", answer=s.Workers
    ),
    Operation("get", "monitoring.queues", "Ready, consumers and dead letters per queue", "monitoring", answer=s.Queues),
    Operation(
        "get",
        "monitoring.health",
        "200 when the broker answers and a worker replies, else 503",
        "monitoring",
        answer=s.MonitoringHealth,
        errors=(503,),
        open=True,
    ),
    Operation(
        "get",
        "health.index",
        "Guide 002's index: Hello, World!",
        "probes",
        errors=(),
        open=True,
        content_type="text/plain",
    ),
    Operation("get", "health.healthz", "Liveness: the process serves", "probes", answer=s.Health, errors=(), open=True),
    Operation(
        "get", "health.readyz", "Readiness: RabbitMQ answers", "probes", answer=s.Health, errors=(503,), open=True
    ),
    Operation("get", "health.metrics", "Prometheus metrics", "probes", errors=(), open=True, content_type="text/plain"),
    Operation("get", "openapi.openapi_json", "This document", "probes", errors=(401,)),
    *(
        Operation("get", f"ops.{view}", summary, "ops", answer=answer, errors=errors, query=query)
        for view, summary, answer, errors, query in (
            (
                "queues",
                "Per work queue: ready, unacked, consumers, dead letters, parked, paused",
                o.OpsQueues,
                (401, 403, 503),
                None,
            ),
            (
                "dead_letters",
                "A page of a queue's dead letters with the exception each died of",
                o.DeadLetterPage,
                OPS_READ_ERRORS,
                o.PageQuery,
            ),
            ("scheduled", "Parked and countdown/ETA tasks with when they run", o.Scheduled, (401, 403, 503), None),
            (
                "workers",
                "Per pool its spec; per worker its node, concurrency, active, reserved, heartbeat age",
                o.OpsWorkers,
                (401, 403, 503),
                None,
            ),
            (
                "tasks",
                "Recent tasks from the result backend (SQL backends; Redis: 501)",
                o.TaskPage,
                (401, 403, 422, 501, 503),
                o.TasksQuery,
            ),
        )
    ),
    *(
        Operation(method, f"ops.{view}", summary, "ops", body=body, answer=answer, errors=OPS_ACTION_ERRORS)
        for method, view, summary, body, answer in (
            ("post", "pause", "Pause a queue on every worker (survives restarts); messages wait", None, o.PauseState),
            (
                "post",
                "resume",
                "Resume a paused queue: its pool consumes it again within a heartbeat",
                None,
                o.PauseState,
            ),
            (
                "post",
                "replay",
                "Replay dead letters (task_ids, or all) with a fresh retry budget",
                o.ReplayRequest,
                o.Replayed,
            ),
            ("delete", "delete_one", "Delete one dead letter", None, o.Deleted),
            (
                "delete",
                "delete_all",
                'Delete every dead letter of the queue: {"all": true, "confirm": "<queue>"}',
                o.DeleteAllRequest,
                o.Deleted,
            ),
            ("post", "cancel", "Cancel a parked or held task: unpark it and revoke it", None, o.Cancelled),
        )
    ),
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


#: Flask's ``<converter(args):name>`` in a rule
_RULE_ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
#: what a path parameter takes, by its Flask converter (the int converter's bound is ID_MAX)
_CONVERTER_SCHEMAS = {"int": ID_SCHEMA, None: TASK_ID_SCHEMA}
#: path parameters that take less than any string, by name
_NAMED_SCHEMAS = {"queue": TypeAdapter(s.QueueName).json_schema()}


@dataclass(frozen=True)
class Route:
    """A registered route as OpenAPI states it: ``/x/{id}`` and each parameter's schema."""

    method: str
    endpoint: str
    path: str
    params: tuple[tuple[str, str | None], ...]  # (name, Flask converter)


def routes(rules: Iterable[Any]) -> tuple[Route, ...]:
    """The routes of Flask rules (``app.url_map.iter_rules()``), without HEAD and OPTIONS."""
    found = []
    for rule in rules:
        path = _RULE_ARGUMENT.sub(lambda m: "{" + m.group(2) + "}", rule.rule)
        params = tuple((m.group(2), m.group(1)) for m in _RULE_ARGUMENT.finditer(rule.rule))
        found += [Route(m.lower(), rule.endpoint, path, params) for m in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return tuple(found)


def documented(served: Iterable[Route]) -> list[tuple[Operation, Route]]:
    """Each operation with its route; an operation whose endpoint is not served is a KeyError."""
    by_endpoint = {(route.method, route.endpoint): route for route in served}
    return [(op, by_endpoint[op.method, op.endpoint]) for op in OPERATIONS]


def _operation(op: Operation, route: Route) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": f"{op.method}_{route.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": _responses(op),
    }
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _NAMED_SCHEMAS.get(name, _CONVERTER_SCHEMAS[converter]),
        }
        for name, converter in route.params
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
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


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A field's schema as a query parameter: absent rather than null, no title."""
    options = [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]
    schema = {**prop, **options[0]} if len(options) == 1 else dict(prop)
    return {k: v for k, v in schema.items() if k not in ("title", "anyOf") and not (k == "default" and v is None)}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One optional query parameter per field of ``model``."""
    schema = model.model_json_schema(mode="validation")
    return [
        {"name": name, "in": "query", "required": False, "schema": _query_schema(prop)}
        for name, prop in schema["properties"].items()
    ]


@cache
def document(task_names: tuple[str, ...], max_delay: float, served: tuple[Route, ...]) -> dict[str, Any]:
    """The document for a fleet serving ``served``, registering ``task_names`` and capping delays at
    ``max_delay`` seconds."""
    paths: dict[str, dict[str, Any]] = {}
    for op, route in documented(served):
        paths.setdefault(route.path, {})[op.method] = _operation(op, route)
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
    served = routes(current_app.url_map.iter_rules())
    return jsonify(document(tuple(sorted(state.public_tasks)), state.settings.api_max_delay, served))
