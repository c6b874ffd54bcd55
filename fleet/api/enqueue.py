"""Turning a validated request into confirmed messages, and the 202 that says so.

Tasks are built as Celery messages by :class:`fleet.publish.TaskMessages`
(canvases captured from ``apply_async``, :mod:`fleet.canvas`) and published by
fleet's one publisher (:mod:`fleet.publish`): routing.py alone decides the
queue, and the answer is 202 only after RabbitMQ acked every message, 503 +
``Retry-After`` when it did not within ``FLEET_PUBLISH_TIMEOUT``. The 503 says
whether nothing was accepted (``"outcome": "none"``) or the outcome is unknown
(``"unknown"``: written, never confirmed). With an ``Idempotency-Key`` the task
ids derive from the key and the request, so a retry republishes the same ids
and the worker runs each once (:mod:`fleet.worker.dedup`).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from celery.canvas import Signature
from flask import Response, g, jsonify, request
from kombu import Producer

from fleet.api.body import field_error, raw_body
from fleet.api.errors import ApiError, unavailable
from fleet.api.idempotency import Record, fingerprint, task_ids
from fleet.api.schemas import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_MAX,
    STATUS_PATH,
    PublishOptions,
    TaskRequest,
)
from fleet.api.state import ApiState, api_state
from fleet.canvas import capture, fix_ids
from fleet.metrics.api import api_metrics, task_label
from fleet.publish import MIN_STEP, BrokerUnavailable, publish_confirmed
from routing import UnknownQueueError, UnknownTaskError, resolve_queue


def status_prefix() -> str:
    """``url_for("status.task_status", task_id=...)`` up to the id, at a fraction of its cost (a hot path)."""
    return f"{request.script_root}{STATUS_PATH}"


def accepted_body(task_id: str, task: str, queue: str, prefix: str) -> dict[str, Any]:
    """``Accepted(...).model_dump(mode="json")`` without pydantic: the 202 of every enqueue (a hot path).

    ``prefix`` is :func:`status_prefix`, read once per request (a batch answers for many tasks).
    """
    return {
        "task_id": task_id,
        "task": task,
        "queue": queue,
        "status_url": prefix + quote(task_id, safe=""),
        "status": "queued",
        "message": None,
    }


def answer_accepted(body: dict[str, Any], task_ids: list[str]) -> Response:
    """The 202, carrying its task ids for :func:`fleet.api.accepted.remembered` (no re-parsing of the body)."""
    response = jsonify(body)
    response.status_code = 202
    if "status_url" in body:
        response.headers["Location"] = body["status_url"]
    response.fleet_task_ids = task_ids  # type: ignore[attr-defined]
    return response


# -- checks --------------------------------------------------------------------


def check_task(state: ApiState, name: str, args: list[Any], kwargs: dict[str, Any], prefix: str = "") -> None:
    """404 for a name the fleet does not offer; 422 when the arguments do not fit its signature."""
    if name not in state.public_tasks:
        raise ApiError(
            404,
            "unknown_task",
            f"no fleet task is named {name!r}",
            [{"field": f"{prefix}task", "message": "not a registered public task"}],
        )
    problem = _misfit(state.celery.tasks[name].run, len(args), tuple(kwargs))
    if problem is not None:
        raise field_error(f"{prefix}args", f"do not fit {name}: {problem}")


@functools.lru_cache(maxsize=1024)
def _misfit(run: Callable[..., Any], positional: int, keywords: tuple[str, ...]) -> str | None:
    """Why a call of this shape does not fit ``run``, or None; cached per shape, binding only ever checks the shape.

    Re-binding the signature on every request cost a few percent of an enqueue's CPU.
    """
    try:
        inspect.signature(run).bind(*([None] * positional), **dict.fromkeys(keywords))
    except TypeError as exc:
        return str(exc)
    return None


def publish_options(state: ApiState, options: PublishOptions, field_prefix: str = "") -> dict[str, Any]:
    """The ``apply_async`` options of a request, with delays capped at FLEET_API_MAX_DELAY (cancellable)."""
    cap = state.settings.api_max_delay
    if options.countdown is not None and options.countdown > cap:
        raise field_error(f"{field_prefix}countdown", f"must be at most {cap:g} seconds (FLEET_API_MAX_DELAY)")
    if options.eta is not None:
        delay = (options.eta - dt.datetime.now(dt.UTC)).total_seconds()
        if delay > cap:
            raise field_error(f"{field_prefix}eta", f"must be at most {cap:g} seconds ahead (FLEET_API_MAX_DELAY)")
    chosen = options.model_dump(include={"queue", "priority", "countdown", "eta", "expires"}, exclude_none=True)
    return chosen


def queue_of(name: str, override: str | None) -> str:
    try:
        return resolve_queue(name, override)
    except (UnknownQueueError, UnknownTaskError) as exc:
        raise field_error("queue", str(exc)) from None


# -- publishing ----------------------------------------------------------------


def record_published(state: ApiState, kind: str, started: float, pairs: Iterable[tuple[str, str]]) -> None:
    metrics = api_metrics()
    metrics.publish_seconds.labels(kind).observe(time.perf_counter() - started)
    for (queue, name), count in Counter(pairs).items():  # a batch: one increment per queue and task, not per task
        metrics.tasks_published.labels(queue, task_label(name, state.public_tasks)).inc(count)


def publish_failed(kind: str, started: float, exc: BrokerUnavailable) -> ApiError:
    metrics = api_metrics()
    metrics.publish_seconds.labels(kind).observe(time.perf_counter() - started)
    metrics.publish_failures.labels(kind, "unavailable").inc()
    if exc.unknown:
        return unavailable(
            "RabbitMQ did not confirm in time; the outcome is unknown: the task may still run. "
            f"Retry with the same {IDEMPOTENCY_HEADER} (it then runs at most once); without one a retry "
            f"may run it twice ({exc})",
            outcome="unknown",
        )
    return unavailable(f"RabbitMQ is unavailable; nothing was accepted, retry later ({exc})", outcome="none")


def keyed_ids() -> Iterator[str] | None:
    """This request's task ids, derived from its Idempotency-Key (set by :func:`idempotent`); None without one."""
    return g.get("fleet_task_ids")


def keyed_task_id() -> str | None:
    """The next task id of this request: derived from its Idempotency-Key, else None (a fresh one)."""
    ids = keyed_ids()
    return next(ids) if ids is not None else None


def publish_task(state: ApiState, name: str, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]) -> str:
    """Publish one task by name; return its id once RabbitMQ confirmed it."""
    task_id = keyed_task_id()
    if task_id is not None:
        options = {**options, "task_id": task_id}
    item = state.messages()(name, args, kwargs, options)
    started = time.perf_counter()
    try:
        state.publisher.publish([item])
    except BrokerUnavailable as exc:
        raise publish_failed("task", started, exc) from None
    record_published(state, "task", started, [(item.queue.name, name)])
    return item.task_id


def enqueue(state: ApiState, name: str, args: list[Any], kwargs: dict[str, Any], options: PublishOptions) -> Response:
    """Check, publish and answer 202 for one task."""
    check_task(state, name, args, kwargs)
    chosen = publish_options(state, options)
    queue = queue_of(name, chosen.get("queue"))
    task_id = publish_task(state, name, args, kwargs, chosen)
    return answer_accepted(accepted_body(task_id, name, queue, status_prefix()), [task_id])


def enqueue_signature(state: ApiState, signature: Signature, entry_task: str) -> Response:
    """Publish a canvas (chain, chord); the id answered is the one whose result is the workflow's.

    Celery builds its messages (and saves a chord's group in the result
    backend); they then go out in one bounded, pipelined publish.
    """
    if keyed_ids() is not None:
        fix_ids(signature, keyed_task_id)  # type: ignore[arg-type] - never None under a key
    queue = queue_of(entry_task, None)
    started = time.perf_counter()
    result, messages = capture(state.celery, signature)
    # Building counts against the deadline too (a chord first saves its group in the result backend).
    left = state.settings.publish_timeout - (time.perf_counter() - started)

    def send(producer: Producer, remaining: float) -> None:
        publish_confirmed(producer.connection, messages, remaining)

    try:
        state.publisher.run(send, timeout=max(left, MIN_STEP))
    except BrokerUnavailable as exc:
        raise publish_failed("workflow", started, exc) from None
    record_published(state, "workflow", started, [(queue, entry_task)])
    return answer_accepted(accepted_body(result.id, entry_task, queue, status_prefix()), [result.id])


def enqueue_batch(state: ApiState, tasks: list[TaskRequest]) -> Response:
    """Publish many tasks with pipelined confirms; 202 only once RabbitMQ acked all of them."""
    limit = state.settings.api_max_batch
    if len(tasks) > limit:
        raise field_error("tasks", f"at most {limit} tasks per batch (FLEET_API_MAX_BATCH)")
    build = state.messages()
    ids = keyed_ids()  # read once for the batch, not per task
    messages = []
    for index, item in enumerate(tasks):
        prefix = f"tasks.{index}."
        try:
            check_task(state, item.task, item.args, item.kwargs, prefix)
        except ApiError as exc:  # an unknown name inside a valid route is a field error here
            raise ApiError(422, exc.code, f"tasks[{index}]: {exc.message}", exc.details) from None
        options = publish_options(state, item, prefix)
        if ids is not None:
            options["task_id"] = next(ids)
        queue_of(item.task, options.get("queue"))  # an unknown queue is a field error, before anything is sent
        messages.append(build(item.task, item.args, item.kwargs, options))
    started = time.perf_counter()
    try:
        state.publisher.publish(messages)
    except BrokerUnavailable as exc:
        raise publish_failed("batch", started, exc) from None
    record_published(state, "batch", started, [(m.queue.name, m.name) for m in messages])
    prefix = status_prefix()
    body = {"count": len(messages), "tasks": [accepted_body(m.task_id, m.name, m.queue.name, prefix) for m in messages]}
    return answer_accepted(body, [m.task_id for m in messages])


# -- idempotency ---------------------------------------------------------------


def idempotent(view: Callable[..., Response]) -> Callable[..., Response]:
    """Honour an ``Idempotency-Key`` header: one enqueue per key within the retention window.

    The request's task ids derive from the key and the request (fixed from the
    first attempt on); a 503 releases the reservation, so the client's retry
    publishes again, with the same ids.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable() or not key.isascii():
            raise field_error(IDEMPOTENCY_HEADER, f"must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters")
        state = api_state()
        print_ = fingerprint(request.method, request.path, raw_body())
        record = state.idempotency.reserve(key, print_)
        if record is not None:
            return _replay(record, print_)
        g.fleet_task_ids = task_ids(key, print_)
        try:
            response = view(*args, **kwargs)
        except BaseException:
            state.idempotency.release(key)
            raise
        if response.status_code == 202:
            state.idempotency.complete(key, print_, response.status_code, response.get_json())
        else:
            state.idempotency.release(key)
        return response

    return wrapper


def _replay(record: Record, print_: str) -> Response:
    if record.fingerprint != print_:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
            [{"field": IDEMPOTENCY_HEADER, "message": "already used with another method, path or body"}],
        )
    if not record.done:
        raise ApiError(
            409,
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )
    response = jsonify(record.body)
    response.status_code = record.status
    response.headers["Idempotent-Replayed"] = "true"
    if isinstance(record.body, dict) and "status_url" in record.body:
        response.headers["Location"] = record.body["status_url"]
    return response
