"""The worker runs a task id at most once: duplicate deliveries are acked, not run.

Duplicates are normal in fleet's model. A publish RabbitMQ did not confirm in
time may still be queued (the API answers 503 with ``"outcome": "unknown"``),
and the client's retry with the same Idempotency-Key republishes the same task
id; a pooled connection found dead is retried with the same ids. So before a
delivery goes to the pool, the worker reads the id's state in the result store
(one read, tasks with a stored result only) and decides:

======================================  =========================================
stored state / delivery                  decision
======================================  =========================================
SUCCESS                                  skip: it ran
STARTED, same attempt (``retries``),     skip: another live delivery holds it (a
not a redelivery, not a DLQ replay       crashed one comes back *redelivered* and
                                         runs then)
the same id and attempt already held     skip: that copy runs
by this worker (waiting, reserved or
running), not a redelivery or replay
RETRY, or STARTED with a lower attempt   run: Celery's own retry republishes the
                                         same id with ``retries`` + 1
STARTED, same attempt, redelivered,      retry (threaded workers): the process
in a threaded worker                     running it died; counted against
                                         ``max_retries`` as prefork's
                                         ``task_retry_on_worker_lost`` does
FAILURE, REVOKED is Celery's own         run (FAILURE): a DLQ replay is a new try
PENDING (nothing stored)                 run
the result store does not answer         run: at-least-once, never lost
======================================  =========================================

A replayed dead letter (``fleet dlq replay`` marks it) runs unless the id
already succeeded. What is not covered: two copies handed to two *different*
worker processes within the few milliseconds between one's read and its
STARTED write both run (not two threaded workers on Redis: there the read
and the write are one script, which Redis runs atomically); tasks with
``ignore_result`` are not deduplicated (nothing is stored to read).

The rule is asked by the worker's Request (:class:`fleet.worker.request.OnceRequest`)
once per delivery: in the main process before the delivery goes to a prefork pool; in a
threaded worker, the held copies in its event loop and the result store in the thread about
to run the task, so a store's round trip holds up that task alone, not every delivery behind it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states

from fleet.republish import REPLAY_HEADER
from fleet.worker.held import held_requests

logger = logging.getLogger("fleet.dedup")

#: the reason :func:`duplicate_of` gives for a task whose threaded worker process died under it
LOST = "its worker process died while running it"


def _attempt(request: Any) -> int:
    return request.request_dict.get("retries") or 0


def held_copy(request: Any) -> Any | None:
    """Another delivery of the same id and attempt this worker holds (waiting, reserved or running)."""
    attempt = _attempt(request)
    same = (r for r in held_requests() if r is not request and r.id == request.id and _attempt(r) == attempt)
    return next(same, None)


def stored_state(backend: Any, request: Any, claim: bool = False) -> tuple[str | None, int]:
    """The stored state and attempt (``retries``) of ``request``'s task: all the decision reads.

    The SQL backend answers with one prebuilt SELECT of the two columns
    (:meth:`fleet.results.PooledDatabaseBackend.stored_state`); any other backend
    through ``get_task_meta``, as Celery reads it. ``claim``: the request runs next in
    this thread; the Redis backend stores its STARTED in the same round trip, unless
    SUCCESS or STARTED is stored (:meth:`fleet.results_redis.OneTripRedisBackend.claim_started`).
    """
    claimed = None
    if claim and request.task.track_started and hasattr(backend, "claim_started"):
        claimed = backend.claim_started(request)
    if claimed is not None:
        state, retries = claimed
    elif (read := getattr(backend, "stored_state", None)) is not None:
        state, retries = read(request.id)
    else:
        meta = backend.get_task_meta(request.id, cache=False)
        state, retries = meta.get("status"), meta.get("retries")
    return state, retries or 0


def duplicate_of(
    request: Any, threaded: bool = False, held: bool = True, stored: bool = True, claim: bool = False
) -> str | None:
    """Why this delivery must not run (a short reason, :data:`LOST` to retry it), or None to run it.

    ``threaded``: the worker runs tasks in threads of its one process (fleet.worker.limits).
    ``held`` / ``stored``: ask about the copies this worker holds / read the result store; a
    threaded worker asks the first in its event loop and the second in the task's own thread,
    where ``claim`` lets the store record STARTED in the same round trip (:func:`stored_state`).
    """
    if request.ignore_result or request.task.ignore_result:
        return None
    attempt = _attempt(request)
    # A redelivery means the copy that held it lost its channel: it can no longer be acked, so this one runs.
    fresh = not (request.delivery_info.get("redelivered") or request.request_dict.get(REPLAY_HEADER))
    if held and fresh and held_copy(request) is not None:
        return "another copy is held by this worker"
    if not stored:
        return None
    try:
        state, stored_attempt = stored_state(request.task.backend, request, claim)
    except Exception:  # noqa: BLE001 - the store is away: run it (at-least-once, never lost)
        logger.warning("could not read the state of task %s; running it", request.id, exc_info=True)
        return None
    if state == states.SUCCESS:
        return "it already succeeded"
    if state == states.STARTED and stored_attempt >= attempt:
        if fresh:
            return "another delivery is running it"
        # Prefork's main process sees a child die and retries its task; a threaded worker dies whole,
        # and only this redelivery tells. Counting it keeps a task that kills its process bounded.
        if threaded and request.delivery_info.get("redelivered") and not request.request_dict.get(REPLAY_HEADER):
            return LOST
    return None
