"""A worker honours paused queues (fleet.ops.pause): when it starts and on every heartbeat.

A pause broadcast (``cancel_consumer``) stops every running worker at once; this step makes the
flag survive what a broadcast cannot reach: a worker restarted, a pod added, a worker that was
reconnecting when the broadcast went out. On resume it consumes its own queues again (the
``-Q`` it was started with, never another pool's). A store it cannot read changes nothing: the
worker keeps consuming as it was, and says so in its log.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from fleet.ops.pause import PauseStore, open_pauses
from fleet.worker.health import HEARTBEAT_INTERVAL

logger = logging.getLogger("fleet.pause")


def plan(own: frozenset[str], consuming: set[str], paused: set[str]) -> tuple[set[str], set[str]]:
    """(queues to stop consuming, queues to consume again) for a worker started on ``own``."""
    return consuming & paused, (own - paused) - consuming


class HonourPauses(bootsteps.StartStopStep):
    """Consumer bootstep: after the task consumer exists, before it consumes, and every heartbeat."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "HonourPauses"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.own = frozenset(c.app.amqp.queues.consume_from or c.app.amqp.queues)
        self.store: PauseStore = open_pauses(c.app.fleet_settings)
        self._timer_entry: Any = None

    def start(self, c: Any) -> None:
        self.apply(c)
        self._timer_entry = c.timer.call_repeatedly(HEARTBEAT_INTERVAL, self.apply, (c,))

    def stop(self, c: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None

    def apply(self, c: Any) -> None:
        """Stop consuming what is paused, consume again what was resumed (runs in the event loop)."""
        if c.task_consumer is None:
            return
        try:
            paused = set(self.store.paused())
        except Exception as exc:  # noqa: BLE001 - an unreadable store must not stop the worker
            logger.warning("cannot read the paused queues, consuming as before: %r", exc)
            return
        consuming = {queue.name for queue in c.task_consumer.queues}  # before consume() starts, too
        stop, start = plan(self.own, consuming, paused)
        for queue in sorted(stop):
            logger.warning("queue %s is paused: not consuming it until it is resumed", queue)
            c.cancel_task_queue(queue)
        for queue in sorted(start):
            logger.warning("queue %s is resumed: consuming it again", queue)
            c.add_task_queue(queue)
