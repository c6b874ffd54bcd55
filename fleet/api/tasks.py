"""Enqueue endpoints: the generic one, the batch, and the Celery+Flask guide's routes."""

from __future__ import annotations

from flask import Blueprint, Response

from fleet.api.body import validated
from fleet.api.enqueue import enqueue, enqueue_batch, enqueue_signature, idempotent
from fleet.api.schemas import (
    BatchRequest,
    EtlRequest,
    GenerateReportRequest,
    ParallelEtlRequest,
    ProcessDataRequest,
    PublishOptions,
    SendBulkEmailsRequest,
    SendEmailRequest,
    TaskRequest,
)
from fleet.api.state import api_state
from fleet.tasks.workflows import etl_pipeline, parallel_etl

bp = Blueprint("tasks", __name__)
#: Path ids are 32-bit: larger numbers are not ids anyone has.
ID = "int(max=2147483647)"
NO_OPTIONS = PublishOptions()


@bp.post("/api/tasks")
@bp.post("/run-task")
@idempotent
def create_task() -> Response:
    body = validated(TaskRequest)
    return enqueue(api_state(), body.task, body.args, body.kwargs, body)


@bp.post("/api/tasks/batch")
@idempotent
def create_batch() -> Response:
    body = validated(BatchRequest)
    return enqueue_batch(api_state(), body.tasks)


@bp.post("/api/send-email")
@idempotent
def send_email() -> Response:
    body = validated(SendEmailRequest)
    return enqueue(api_state(), "tasks.send_email", [body.to, body.subject, body.body], {}, NO_OPTIONS)


@bp.post("/api/send-bulk-emails")
@idempotent
def send_bulk_emails() -> Response:
    body = validated(SendBulkEmailsRequest)
    args = [body.recipients, body.subject, body.body]
    return enqueue(api_state(), "tasks.send_bulk_emails", args, {}, NO_OPTIONS)


@bp.post(f"/api/process-data/<{ID}:data_id>")
@idempotent
def process_data(data_id: int) -> Response:
    body = validated(ProcessDataRequest)
    kwargs = {"rows": body.rows, "step_delay": body.step_delay}
    return enqueue(api_state(), "tasks.process_data", [data_id], kwargs, NO_OPTIONS)


@bp.post("/api/generate-report")
@idempotent
def generate_report() -> Response:
    body = validated(GenerateReportRequest)
    kwargs = {"rows": body.rows, "seed": body.seed}
    return enqueue(api_state(), "tasks.generate_report", [body.report_type], kwargs, NO_OPTIONS)


@bp.post(f"/api/etl/single/<{ID}:source_id>")
@idempotent
def etl_single(source_id: int) -> Response:
    body = validated(EtlRequest)
    return enqueue_signature(api_state(), etl_pipeline(source_id, body.records), "tasks.fetch_data")


@bp.post("/api/etl/parallel")
@idempotent
def etl_parallel() -> Response:
    body = validated(ParallelEtlRequest)
    return enqueue_signature(api_state(), parallel_etl(body.source_ids, body.records), "tasks.fetch_data")
