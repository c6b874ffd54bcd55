"""One receiver per Celery run signal for all the work fleet does around a task run.

Time limits (:mod:`fleet.worker.limits`), the task metrics (:mod:`fleet.metrics.worker`)
and the outcome log line (:mod:`fleet.worker.tasklog`) each need the start and the end
of every run. Connected to Celery's signals one by one, each was a receiver call of its
own and each looked the task's request up again in Celery's thread-local stack (about
6 µs a lookup), and the success line took a third signal, ``task_success``. Here they
register their *hooks*: one ``task_prerun`` and one ``task_postrun`` receiver call them all
with the request looked up once, and nothing listens to ``task_success``, so Celery
skips that send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import signals

logger = logging.getLogger("fleet.taskrun")


#: called after Celery pushed the run's request, before the task body: (task, request, task_id)
Started = Callable[[Any, Any, str], None]
#: called after the outcome was stored: (task, request, task_id, state); state None: the run was cut short
Ended = Callable[[Any, Any, str, "str | None"], None]

_registered: dict[str, tuple[Started | None, Ended | None]] = {}  # name -> hooks, in registration order
_started: tuple[Started, ...] = ()
_ended: tuple[Ended, ...] = ()


def register(name: str, started: Started | None = None, ended: Ended | None = None) -> None:
    """Call these hooks around every task run in this process, in the thread running it;
    registering ``name`` again replaces its hooks."""
    _registered[name] = (started, ended)
    _rebuild()
    signals.task_prerun.connect(_on_prerun, dispatch_uid="fleet.taskrun.prerun", weak=False)
    signals.task_postrun.connect(_on_postrun, dispatch_uid="fleet.taskrun.postrun", weak=False)


def unregister(name: str) -> None:
    """Stop calling the hooks registered as ``name``."""
    _registered.pop(name, None)
    _rebuild()


def _rebuild() -> None:
    global _started, _ended
    _started = tuple(started for started, _ in _registered.values() if started is not None)
    _ended = tuple(ended for _, ended in _registered.values() if ended is not None)


def _on_prerun(sender: Any = None, task_id: str = "?", **_: Any) -> None:
    request = sender.request
    for started in _started:
        try:
            started(sender, request, task_id)
        except Exception:  # noqa: BLE001 - as Celery's dispatcher does: one hook's bug stops no other
            logger.exception("task run hook %r failed", started)


def _on_postrun(sender: Any = None, task_id: str = "?", state: str | None = None, **_: Any) -> None:
    request = sender.request
    for ended in _ended:
        try:
            ended(sender, request, task_id, state)
        except Exception:  # noqa: BLE001 - as Celery's dispatcher does: one hook's bug stops no other
            logger.exception("task run hook %r failed", ended)
