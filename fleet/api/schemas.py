"""Request and response schemas, one per endpoint (pydantic).

Requests are strict (no silent "5" -> 5 coercion) and refuse unknown fields,
so a typo in a field name is a 422 instead of a task run with defaults. The
same models generate the OpenAPI document, so the documented shapes are the
validated ones.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from annotated_types import Interval
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    model_validator,
)

from fleet.tasks.data import STEP_DELAY
from fleet.tasks.email import DEFAULT_BODY, DEFAULT_SUBJECT
from fleet.tasks.examples import DEFAULT_DURATION
from fleet.tasks.reports import REPORT_TYPES
from queues import MAX_PRIORITY, WORK_QUEUES


def _integral(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer; accept it as 5 (strict mode would not). Never "5" or true."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: A strict int that also takes integral JSON numbers such as 5.0 (bounds go before the validator,
#: or they vanish from the JSON schema).
Integer = Annotated[int, BeforeValidator(_integral)]
QueueName = Literal[tuple(WORK_QUEUES)]  # type: ignore[valid-type]
ReportType = Literal[REPORT_TYPES]  # type: ignore[valid-type]
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: str) -> str:
    if not EMAIL.fullmatch(value):
        raise ValueError("not an email address (expected local@domain.tld)")
    return value


#: Checked in Python (fullmatch): a JSON Schema "pattern" ending in $ would admit a trailing newline.
Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=254),
    AfterValidator(_email),
    Field(json_schema_extra={"format": "email"}),
]
Subject = Annotated[str, StringConstraints(max_length=998)]
Text = Annotated[str, StringConstraints(max_length=100_000)]
#: JSON-safe integers (JavaScript clients lose precision above 2**53).
SafeInt = Annotated[int, Interval(ge=-(2**53), le=2**53), BeforeValidator(_integral)]
#: Datetimes arrive as ISO 8601 strings, so this one field is validated in lax mode.
Timestamp = Annotated[AwareDatetime, Field(strict=False)]
#: Celery's result tables hold task ids of up to this many characters (so do fleet's own tables).
TASK_ID_MAX = 155
#: Any id Celery can store.
TaskId = Annotated[str, StringConstraints(min_length=1, max_length=TASK_ID_MAX)]
#: Path and source ids are 32-bit: larger numbers are not ids anyone has.
ID_MAX = 2**31 - 1
Id = Annotated[int, Interval(ge=0, le=ID_MAX), BeforeValidator(_integral)]
#: where a task's status is read (GET, fleet.api.task_status); the 202's status_url builds on it
STATUS_PATH = "/api/task-status/"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255
#: What the API takes as an Idempotency-Key: printable ASCII, no space at either end (headers are stripped).
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_MAX, pattern=r"^[!-~]([ -~]*[!-~])?$")
]


def _no_default(schema: dict[str, Any]) -> None:
    """For a field that is absent or a value, never null: its schema shows no ``default: null``."""
    schema.pop("default", None)


def _one_of(schema: dict[str, Any], *names: str) -> None:
    """Exactly one of ``names`` is given; absent rather than null, so neither shows ``default: null``."""
    schema["oneOf"] = [{"required": [name]} for name in names]
    for name in names:
        schema["properties"][name].pop("default", None)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- requests ------------------------------------------------------------------


class PublishOptions(Request):
    """Per-call overrides, as ``apply_async`` takes them."""

    queue: QueueName | None = Field(None, description="Override the queue routing.py chooses.")
    priority: Integer | None = Field(
        None, ge=0, le=MAX_PRIORITY, description=f"0 (lowest) to {MAX_PRIORITY}; honoured on high_priority."
    )
    countdown: float | None = Field(None, ge=0, description="Seconds to wait before running (FLEET_API_MAX_DELAY).")
    eta: Timestamp | None = Field(None, description="When to run, ISO 8601 with a time zone.")
    expires: float | None = Field(None, gt=0, le=30 * 86400, description="Seconds after which it is discarded.")


class TaskRequest(PublishOptions):
    task: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="A registered public task name, e.g. tasks.send_email."
    )
    args: list[Any] = Field(default_factory=list, max_length=1000)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class BatchRequest(Request):
    tasks: list[TaskRequest] = Field(min_length=1, description="At most FLEET_API_MAX_BATCH tasks.")


class RunTaskRequest(Request):
    """Guide 000's ``POST /run-task`` body: run ``tasks.long_running_task`` for ``duration`` seconds."""

    duration: float = Field(
        DEFAULT_DURATION, ge=0, description="Seconds the task takes; below the default pool's soft time limit."
    )


class AnyRunTaskRequest(RootModel[TaskRequest | RunTaskRequest]):
    """``POST /run-task``: fleet's ``{"task", ...}``, or guide 000's ``{"duration"}`` (told apart by ``task``)."""


class SendEmailRequest(Request):
    """The guide's ``recipient``; ``to`` is fleet's older name for it, accepted instead (never both)."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _one_of(schema, "recipient", "to"))

    recipient: Email = Field(None, description="The guide's field (give this or to).")  # type: ignore[assignment]
    to: Email = Field(None, description="Alias of recipient (give one of the two).")  # type: ignore[assignment]
    subject: Subject
    body: Text

    @model_validator(mode="after")
    def _one_recipient(self) -> SendEmailRequest:
        if len({"recipient", "to"} & self.model_fields_set) != 1:
            raise ValueError("give recipient (or its alias to), exactly one of them")
        return self

    @property
    def address(self) -> str:
        return self.recipient or self.to


class SendBulkEmailsRequest(Request):
    recipients: list[Email] = Field(min_length=1, max_length=10_000)
    subject: Subject = DEFAULT_SUBJECT
    body: Text = DEFAULT_BODY


class ProcessDataRequest(Request):
    rows: Integer = Field(10_000, ge=1, le=1_000_000)
    step_delay: float = Field(STEP_DELAY, ge=0, le=60, description="Seconds each of the 4 steps waits (the guide's 1).")


class ReportParameters(BaseModel):
    """The guide's free-form ``parameters``; ``rows`` and ``seed`` shape the report, other keys are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    rows: Integer = Field(
        None, ge=1, le=1_000_000, description="Wins over the top-level rows.", json_schema_extra=_no_default
    )  # type: ignore[assignment]
    seed: SafeInt = Field(None, description="Wins over the top-level seed.", json_schema_extra=_no_default)  # type: ignore[assignment]


class GenerateReportRequest(Request):
    report_type: ReportType
    parameters: ReportParameters = Field(default_factory=ReportParameters)
    rows: Integer = Field(1000, ge=1, le=1_000_000)
    seed: SafeInt = 0

    @property
    def task_parameters(self) -> dict[str, Any]:
        """``parameters`` as the task gets them: the top-level ``rows``/``seed`` unless parameters set them."""
        return {"rows": self.rows, "seed": self.seed, **self.parameters.model_dump(mode="json", exclude_unset=True)}


class EtlRequest(Request):
    records: Integer = Field(100, ge=1, le=10_000)


class ParallelEtlRequest(EtlRequest):
    source_ids: list[Id] = Field(min_length=1, max_length=100)


# -- responses -----------------------------------------------------------------


class Accepted(BaseModel):
    """Answered with 202 only after RabbitMQ confirmed the message."""

    task_id: str
    task: str
    queue: str
    status_url: str
    status: Literal["queued", "Task started"] = Field(
        "queued", description='"Task started" on guide 000\'s POST /run-task {"duration"}, else "queued".'
    )
    message: str | None = Field(None, description="The guide's words on its routes, e.g. 'Email queued for sending'.")


class BatchAccepted(BaseModel):
    count: int
    tasks: list[Accepted]


class TaskError(BaseModel):
    type: str
    message: str


class TaskStatus(BaseModel):
    task_id: str
    state: str = Field(description="PENDING, RECEIVED, STARTED, PROGRESS, SUCCESS, FAILURE, RETRY, REVOKED, ...")
    status: str = Field(description="The state in words.")
    known: bool = Field(description="Whether the result backend has any record of this id.")
    task: str | None = None
    queue: str | None = None
    worker: str | None = None
    retries: int | None = None
    progress: dict[str, Any] | None = None
    result: Any = None
    error: str | None = Field(None, description="What the task raised, as text (the guide's str(task.info)).")
    exception: TaskError | None = Field(None, description="What the task raised: its type and message.")
    date_done: datetime | None = Field(None, description="Set only once the task finished.")


class RunTaskStatus(BaseModel):
    """Guide 000's ``GET /task-status/<id>``: ``status`` is the state; fleet's fields follow."""

    task_id: str
    status: str = Field(description="The state: PENDING, STARTED, PROGRESS, SUCCESS, FAILURE, REVOKED, ...")
    result: Any = Field(None, description="The return value once SUCCESS; the progress meta while PROGRESS.")
    state: str
    status_text: str = Field(description="The state in words.")
    known: bool
    task: str | None = None
    queue: str | None = None
    worker: str | None = None
    retries: int | None = None
    progress: dict[str, Any] | None = None
    error: str | None = Field(None, description="What the task raised, as text (the guide's str(task.info)).")
    exception: TaskError | None = Field(None, description="What the task raised: its type and message.")
    date_done: datetime | None = Field(None, description="Set only once the task finished.")


class CancelRequest(Request):
    terminate: bool = Field(False, description="Also stop a running task (prefork pools: its process is signalled).")


class CancelAccepted(BaseModel):
    task_id: str
    state: str = Field(description="The state when the cancel arrived.")
    was: Literal["queued", "running", "finished"]
    terminate: bool = Field(description="Whether a running task's process is being terminated.")
    status: str


class WorkerInfo(BaseModel):
    name: str
    active: int
    reserved: int
    concurrency: int | None
    pool: str | None


class Workers(BaseModel):
    count: int
    workers: list[WorkerInfo]


class QueueInfo(BaseModel):
    name: str
    ready: int
    consumers: int
    dead_letter_queue: str
    dead_lettered: int


class Queues(BaseModel):
    queues: list[QueueInfo]


class MonitoringHealth(BaseModel):
    status: Literal["ok", "unavailable"]
    workers: int
    broker: bool


class Health(BaseModel):
    status: Literal["ok", "ready", "unavailable"]
    broker: bool | None = None


class ErrorDetail(BaseModel):
    field: str
    message: str


class Error(BaseModel):
    """Every error, whatever its status."""

    error: str = Field(description="A stable machine-readable code, e.g. validation_error.")
    message: str
    status: int
    details: list[ErrorDetail]
    outcome: str | None = Field(
        None,
        description="On a 503 from publishing: 'none' (nothing was accepted) or 'unknown' (the broker may still "
        "run it; retry with the same Idempotency-Key).",
    )
