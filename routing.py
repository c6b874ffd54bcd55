"""Which task goes to which queue: the routing table and the router Celery uses.

Nothing else in fleet decides where a task goes. A per-call ``queue=`` (or
``priority=``) passed to ``apply_async``/``send_task`` overrides the table, as
Celery users expect; a name no worker registers is refused instead of being
published into a queue where nothing can run it.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from queues import DEFAULT_QUEUE, WORK_QUEUES

#: task name -> queue. Anything not listed goes to ``DEFAULT_QUEUE``.
ROUTES: dict[str, str] = {
    "tasks.send_email": "email",
    "tasks.send_bulk_emails": "email",
    "tasks.process_payment": "high_priority",
    "tasks.generate_report": "reports",
    # The guide's @shared_task(queue='high_priority'); its queue='low_priority' has no queue in
    # fleet's topology, so tasks.low_priority takes the guide's tasks.* catch-all to default.
    "tasks.high_priority": "high_priority",
}


class UnknownTaskError(LookupError):
    """The task name is not registered by any fleet task module."""


class UnknownQueueError(LookupError):
    """The requested queue is not part of fleet's topology."""


def queue_for(task_name: str) -> str:
    """The queue ``task_name`` is routed to by the table."""
    return ROUTES.get(task_name, DEFAULT_QUEUE)


def resolve_queue(task_name: str, override: str | None = None) -> str:
    """The queue a publish goes to: the per-call override if given, else the table."""
    queue = override or queue_for(task_name)
    if queue not in WORK_QUEUES:
        raise UnknownQueueError(f"unknown queue {queue!r}; fleet's queues are {', '.join(WORK_QUEUES)}")
    return queue


class Router:
    """A Celery router (``task_routes``) that applies :data:`ROUTES`.

    ``registered`` returns the names the fleet registers; it is a callable so
    the task registry is read when routing, after every task module loaded.
    """

    def __init__(self, registered: Callable[[], Container[str]]) -> None:
        self._registered = registered

    def __call__(
        self, name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **kw: Any
    ) -> dict[str, str]:
        if name not in self._registered():
            raise UnknownTaskError(
                f"no fleet worker registers a task named {name!r}; refusing to publish it "
                "(add its module to fleet.tasks.TASK_MODULES or FLEET_TASK_MODULES)"
            )
        override = options.get("queue")  # Celery has expanded it to a kombu Queue by now
        return {"queue": resolve_queue(name, getattr(override, "name", override))}
