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
by this worker (reserved or running)
RETRY, or STARTED with a lower attempt   run: Celery's own retry republishes the
                                         same id with ``retries`` + 1
FAILURE, REVOKED is Celery's own         run (FAILURE): a DLQ replay is a new try
PENDING (nothing stored)                 run
the result store does not answer         run: at-least-once, never lost
======================================  =========================================

A replayed dead letter (``fleet dlq replay`` marks it) runs unless the id
already succeeded. What is not covered: two copies handed to two *different*
worker processes within the few milliseconds between one's read and its
STARTED write both run; tasks with ``ignore_result`` are not deduplicated
(nothing is stored to read).

The check runs in the worker's main process where Celery asks whether a
request was revoked (just before it goes to the pool, or on arrival for a task
with an expiry), once per delivery.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.worker.state import active_requests, reserved_requests, task_ready

from fleet.metrics.request import MeteredRequest
from fleet.republish import REPLAY_HEADER

logger = logging.getLogger("fleet.dedup")


def duplicate_of(request: Any) -> str | None:
    """Why this delivery must not run (a short reason), or None to run it."""
    if request.ignore_result or request.task.ignore_result:
        return None
    attempt = request.request_dict.get("retries") or 0
    for other in (*active_requests, *reserved_requests):
        if other is not request and other.id == request.id and (other.request_dict.get("retries") or 0) == attempt:
            return "another copy is held by this worker"
    try:
        meta = request.task.backend.get_task_meta(request.id, cache=False)
    except Exception:  # noqa: BLE001 - the store is away: run it (at-least-once, never lost)
        logger.warning("could not read the state of task %s; running it", request.id, exc_info=True)
        return None
    state = meta.get("status")
    if state == states.SUCCESS:
        return "it already succeeded"
    if request.request_dict.get(REPLAY_HEADER) or request.delivery_info.get("redelivered"):
        return None
    if state == states.STARTED and (meta.get("retries") or 0) >= attempt:
        return "another delivery is running it"
    return None


class OnceRequest(MeteredRequest):
    """A request that is not run when its task id already ran or is running (see the module's table)."""

    _fleet_checked = False

    def revoked(self) -> bool:
        if super().revoked():
            return True
        if self._fleet_checked:
            return False
        self._fleet_checked = True
        reason = duplicate_of(self)
        if reason is None:
            return False
        logger.info("task %s[%s] not run again: %s", self.name, self.id, reason)
        task_ready(self)
        self.acknowledge()
        return True
