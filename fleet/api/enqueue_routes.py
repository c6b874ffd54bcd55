"""Enqueue endpoints: the generic one, the batch, and the guides' routes with their payloads.

The guides' routes answer as the guides do (their ``message``, and
``status: "Task started"`` on ``POST /run-task {"duration"}``) on top of
fleet's 202 body.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from fleet.api.accepted import remembered
from fleet.api.body import field_error, json_object, validated
from fleet.api.enqueue import enqueue, enqueue_batch, enqueue_signature, idempotent
from fleet.api.schemas import (
    ID_MAX,
    BatchRequest,
    EtlRequest,
    GenerateReportRequest,
    ParallelEtlRequest,
    ProcessDataRequest,
    PublishOptions,
    RunTaskRequest,
    SendBulkEmailsRequest,
    SendEmailRequest,
    TaskRequest,
)
from fleet.api.state import api_state
from fleet.tasks.workflows import etl_pipeline, parallel_etl
from routing import queue_for

bp = Blueprint("tasks", __name__)
ID = f"int(max={ID_MAX})"
NO_OPTIONS = PublishOptions()


def in_guide_words(response: Response, **fields: Any) -> Response:
    """Add the guide's answer fields to a 202 (errors keep the one Error shape)."""
    if response.status_code == 202:
        response.set_data(current_app.json.dumps({**response.get_json(), **fields}))
    return response


def enqueue_named(data: dict[str, Any] | None = None) -> Response:
    body = validated(TaskRequest, data)
    return enqueue(api_state(), body.task, body.args, body.kwargs, body)


@bp.post("/api/tasks")
@remembered
@idempotent
def create_task() -> Response:
    return enqueue_named()


@bp.post("/run-task")
@remembered
@idempotent
def run_task() -> Response:
    """Two shapes, told apart by ``task``: fleet's generic ``{"task", ...}`` (as /api/tasks),
    or guide 000's ``{"duration": n}`` (default 5), which runs ``tasks.long_running_task``."""
    data = json_object()
    if "task" in data:
        return enqueue_named(data)
    body = validated(RunTaskRequest, data)
    state = api_state()
    pool = state.pool_of(queue_for("tasks.long_running_task"))
    limit = pool.soft_time_limit if pool is not None else 0
    if body.duration >= limit:
        raise field_error("duration", f"must be below {limit} s, the default pool's soft time limit")
    duration: float | int = int(body.duration) if float(body.duration).is_integer() else body.duration
    response = enqueue(state, "tasks.long_running_task", [duration], {}, NO_OPTIONS)
    return in_guide_words(response, status="Task started")


@bp.post("/api/tasks/batch")
@remembered
@idempotent
def create_batch() -> Response:
    body = validated(BatchRequest)
    return enqueue_batch(api_state(), body.tasks)


@bp.post("/api/send-email")
@remembered
@idempotent
def send_email() -> Response:
    body = validated(SendEmailRequest)
    response = enqueue(api_state(), "tasks.send_email", [body.address, body.subject, body.body], {}, NO_OPTIONS)
    return in_guide_words(response, message="Email queued for sending")


@bp.post("/api/send-bulk-emails")
@remembered
@idempotent
def send_bulk_emails() -> Response:
    body = validated(SendBulkEmailsRequest)
    args = [body.recipients, body.subject, body.body]
    response = enqueue(api_state(), "tasks.send_bulk_emails", args, {}, NO_OPTIONS)
    return in_guide_words(response, message=f"Queued {len(body.recipients)} emails")


@bp.post(f"/api/process-data/<{ID}:data_id>")
@remembered
@idempotent
def process_data(data_id: int) -> Response:
    body = validated(ProcessDataRequest)
    kwargs = {"rows": body.rows, "step_delay": body.step_delay}
    response = enqueue(api_state(), "tasks.process_data", [data_id], kwargs, NO_OPTIONS)
    return in_guide_words(response, message="Data processing started")


@bp.post("/api/generate-report")
@remembered
@idempotent
def generate_report() -> Response:
    body = validated(GenerateReportRequest)
    args = [body.report_type, body.task_parameters]
    response = enqueue(api_state(), "tasks.generate_report", args, {}, NO_OPTIONS)
    return in_guide_words(response, message="Report generation started")


@bp.post(f"/api/etl/single/<{ID}:source_id>")
@remembered
@idempotent
def etl_single(source_id: int) -> Response:
    body = validated(EtlRequest)
    response = enqueue_signature(api_state(), etl_pipeline(source_id, body.records), "tasks.fetch_data")
    return in_guide_words(response, message="ETL pipeline started")


@bp.post("/api/etl/parallel")
@remembered
@idempotent
def etl_parallel() -> Response:
    body = validated(ParallelEtlRequest)
    response = enqueue_signature(api_state(), parallel_etl(body.source_ids, body.records), "tasks.fetch_data")
    return in_guide_words(response, message=f"Parallel ETL started for {len(body.source_ids)} sources")
