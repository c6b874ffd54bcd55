"""Copies of the worker's request sets that hold while pool threads change them.

Celery keeps the active, reserved and scheduled requests in ``WeakSet``\\ s. Iterating a
``WeakSet`` runs Python code, so a pool thread finishing a task can change the set in the middle
("Set changed size during iteration"): in the dedup check that failed the delivery, which was
dead-lettered. Copying the set of references underneath is one C call, atomic under the GIL.
"""

from __future__ import annotations

import weakref
from typing import Any

from celery.worker import state


def snapshot(requests: weakref.WeakSet) -> list[Any]:
    """The requests in one of Celery's sets now (those not yet collected)."""
    return [request for ref in requests.data.copy() if (request := ref()) is not None]


def held_requests() -> list[Any]:
    """Every request this worker holds: running, reserved (prefetched) or waiting for its ETA."""
    return [*snapshot(state.active_requests), *snapshot(state.reserved_requests), *snapshot(state.scheduled_requests)]
