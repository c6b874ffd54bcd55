"""What the API's views share per Flask app: settings, Celery, the publisher, the idempotency store."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from flask import Flask, current_app

from fleet.api.accepted import AcceptedIds, open_accepted
from fleet.api.idempotency import IdempotencyStore, open_store
from fleet.ops.pause import PauseStore, open_pauses
from fleet.pools import POOLS, PoolSpec, env_overrides, with_overrides
from fleet.publish import Publisher, TaskMessages, publisher_for
from fleet.settings import Settings

if TYPE_CHECKING:
    from fleet.celery_app import FleetCelery

EXTENSION = "fleet.api"


@dataclass
class ApiState:
    settings: Settings
    celery: FleetCelery
    started: bool = field(default=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def messages(self) -> TaskMessages:
        """This thread's message builder: Celery's configuration read once, ``reply_to`` per thread as in Celery."""
        build = getattr(self._local, "messages", None)
        if build is None:
            build = self._local.messages = TaskMessages(self.celery)
        return build

    @cached_property
    def publisher(self) -> Publisher:
        """The process's one publisher (fleet.publish), shared with fan-outs and replay."""
        return publisher_for(self.celery)

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        return open_store(self.settings)

    @cached_property
    def pauses(self) -> PauseStore:
        """The paused-queue flags every worker honours (fleet.ops.pause)."""
        return open_pauses(self.settings)

    @cached_property
    def accepted(self) -> AcceptedIds | None:
        return open_accepted(self.settings)

    def pool_of(self, queue: str) -> PoolSpec | None:
        """The pool spec consuming ``queue``, with this deployment's FLEET_POOL_* overrides."""
        for spec in POOLS.values():
            if queue in spec.queues:
                return with_overrides(spec, env_overrides(spec, self.settings.pool_env))
        return None

    @cached_property
    def public_tasks(self) -> frozenset[str]:
        """Task names a client may enqueue: the fleet's own ``tasks.*``, never Celery's internals."""
        return frozenset(name for name in self.celery.tasks if not name.startswith("celery."))


def attach(app: Flask, settings: Settings, celery: FleetCelery) -> ApiState:
    state = ApiState(settings, celery)
    app.extensions[EXTENSION] = state
    return state


def api_state() -> ApiState:
    return current_app.extensions[EXTENSION]
