"""Low-cardinality label values: queue, task, exception.

Never a hostname or a task id. A task name the worker does not register and a
queue outside the topology become ``other``; exception class names are capped
per process so a misbehaving task cannot mint series without bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from queues import WORK_QUEUES

OTHER = "other"
MAX_EXCEPTION_NAMES = 20


class Labeler:
    """Maps what a signal carries to bounded label values."""

    def __init__(self, known_tasks: Iterable[str], max_exception_names: int = MAX_EXCEPTION_NAMES) -> None:
        self.known_tasks = frozenset(known_tasks)
        self.max_exception_names = max_exception_names
        self._exception_names: set[str] = set()

    def task(self, name: Any) -> str:
        # a malformed message's task header may be anything, even unhashable
        return name if isinstance(name, str) and name in self.known_tasks else OTHER

    @staticmethod
    def queue(delivery_info: Mapping[str, Any] | None) -> str:
        """The queue a message came from: its routing key (each queue is bound under its own name)."""
        key = (delivery_info or {}).get("routing_key")
        return key if key in WORK_QUEUES else OTHER

    def exception(self, exc: BaseException | None) -> str:
        # Celery wraps exceptions it cannot serialize as JSON; the label is the original class.
        name = getattr(exc, "exc_cls_name", None) or type(exc).__name__
        if name in self._exception_names:
            return name
        if len(self._exception_names) >= self.max_exception_names:
            return OTHER
        self._exception_names.add(name)
        return name

    def for_request(self, request: Any, name: str | None = None) -> tuple[str, str]:
        """(queue, task) for a worker Request or a task's request Context."""
        return self.queue(getattr(request, "delivery_info", None)), self.task(name or getattr(request, "task", None))
