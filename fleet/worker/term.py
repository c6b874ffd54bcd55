"""TERM on a running worker: a warm stop when idle, the bounded soft shutdown when busy.

With ``REMAP_SIGTERM=SIGQUIT`` (fleet.worker.shutdown) Celery answers TERM with its cold
path, and that path does its broker work inside the signal handler: a ``basic_cancel`` on the
socket the interrupted main loop may be reading. An idle worker gains nothing from it (there is
nothing to wait for) and, now and then, a stop became an "Unrecoverable error" and exit code 1.
So an idle worker takes Celery's warm path, which only sets a flag; a busy one keeps the soft
shutdown that bounds a rollout.
"""

from __future__ import annotations

from types import FrameType

from celery import platforms
from celery.apps.worker import Worker, _shutdown_handler
from celery.worker import state


class FleetWorker(Worker):
    """Celery's worker with fleet's TERM: warm when no task runs, soft shutdown otherwise."""

    def install_platform_tweaks(self, worker: Worker) -> None:
        super().install_platform_tweaks(worker)
        busy = platforms.signals["SIGTERM"]  # Celery's TERM: the soft shutdown under fleet worker
        _shutdown_handler(worker, sig="SIGTERM", how="Warm")
        idle = platforms.signals["SIGTERM"]

        def on_term(signum: int, frame: FrameType | None) -> None:
            (busy if state.active_requests else idle)(signum, frame)

        platforms.signals["SIGTERM"] = on_term
