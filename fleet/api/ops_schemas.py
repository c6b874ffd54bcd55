"""Request, query and answer schemas of the operator API (``/api/ops/*``), for validation and OpenAPI."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from fleet.api.schemas import QueueName, Request, TaskId, _one_of
from fleet.ops.tasks import STATES

#: Dead letters or tasks answered per page at most.
PAGE_MAX = 500
Limit = Annotated[int, Field(ge=1, le=PAGE_MAX)]
Offset = Annotated[int, Field(ge=0, le=1_000_000)]


class Query(BaseModel):
    """Query strings arrive as text: lax mode turns "5" into 5; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore")


class PageQuery(Query):
    limit: Limit = 50
    offset: Offset = 0


class TasksQuery(PageQuery):
    state: Literal[STATES] | None = None  # type: ignore[valid-type]
    task: Annotated[str, Field(min_length=1, max_length=155)] | None = None
    queue: QueueName | None = None
    since: AwareDatetime | None = Field(None, description="ISO 8601 with a timezone: tasks finished since then.")


class ReplayRequest(Request):
    """Which dead letters to replay: ``task_ids``, or ``all`` (exactly one of them)."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _one_of(schema, "task_ids", "all"))

    task_ids: Annotated[list[TaskId], Field(min_length=1, max_length=PAGE_MAX)] = Field(None)  # type: ignore[assignment]
    all: Literal[True] = Field(None)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one(self) -> ReplayRequest:
        if len({"task_ids", "all"} & self.model_fields_set) != 1:
            raise ValueError("give either task_ids or all: true, exactly one of them")
        return self


class DeleteAllRequest(Request):
    """Deleting every dead letter of a queue takes the queue's name again, as a confirmation."""

    all: Literal[True]
    confirm: QueueName


class OpsQueue(BaseModel):
    name: str
    ready: int
    unacked: int | None = Field(description="Held by workers (running or reserved), as they answer; null if none did.")
    consumers: int
    dead_letters: int
    parked: int = Field(description="Far-future ETA tasks for this queue waiting in fleet.delay.* queues.")
    paused: bool
    paused_by: str | None
    paused_at: float | None


class OpsQueues(BaseModel):
    queues: list[OpsQueue]


class ExceptionInfo(BaseModel):
    type: str
    message: str


class DeadLetterItem(BaseModel):
    task_id: str
    task: str
    args: str = Field(description="argsrepr, truncated")
    kwargs: str = Field(description="kwargsrepr, truncated")
    exception: ExceptionInfo | None
    traceback: str = Field(description="The last lines of the traceback")
    reason: str
    count: int = Field(description="Times it was dead-lettered")
    retries: int
    first_death: str
    last_death: str


class DeadLetterPage(BaseModel):
    queue: str
    total: int
    limit: int
    offset: int
    items: list[DeadLetterItem]


class Replayed(BaseModel):
    queue: str
    replayed: int


class Deleted(BaseModel):
    queue: str
    deleted: int


class ScheduledItem(BaseModel):
    task_id: str
    task: str
    queue: str
    eta: str | None
    where: str = Field(description="The fleet.delay.* queue it is parked in, or the worker holding it.")
    kind: Literal["parked", "held"]


class Scheduled(BaseModel):
    items: list[ScheduledItem]


class Cancelled(BaseModel):
    task_id: str
    unparked: bool = Field(description="Whether it was removed from a fleet.delay.* queue.")
    status: str


class OpsWorker(BaseModel):
    node: str
    answered: bool
    concurrency: int | None
    active: int
    reserved: int
    heartbeat_age: float | None = Field(description="Seconds since its heartbeat file was touched (same host only).")


class OpsPool(BaseModel):
    name: str
    kind: str
    queues: list[str]
    concurrency: int
    prefetch_multiplier: int
    replicas: int
    time_limit: int
    workers: list[OpsWorker]


class OpsWorkers(BaseModel):
    pools: list[OpsPool]


class TaskRow(BaseModel):
    task_id: str
    state: str
    task: str | None
    queue: str | None
    worker: str | None
    retries: int | None
    started: str | None
    finished: str | None
    args: str | None
    exception: ExceptionInfo | None


class TaskPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TaskRow]


class PauseState(BaseModel):
    queue: str
    paused: bool
    paused_by: str | None
