"""TERM on a running worker: a warm stop when idle, the bounded soft shutdown when busy.

With ``REMAP_SIGTERM=SIGQUIT`` (fleet.worker.shutdown) Celery answers TERM with its cold
path, and that path does its broker work inside the signal handler: a ``basic_cancel`` on the
socket the interrupted main loop may be reading. An idle worker gains nothing from it (there is
nothing to wait for) and, now and then, a stop became an "Unrecoverable error" and exit code 1.
So an idle worker takes Celery's warm path, which only sets a flag; a busy one keeps the soft
shutdown that bounds a rollout.

Celery's soft shutdown sleeps its whole timeout, even when the tasks are done in a second. A
threaded pool settles its tasks in their own threads while the main thread waits, so fleet's
wait ends as soon as none is left (a prefork pool's results come through the main loop the
handler interrupted, so there it still lasts the timeout).
"""

from __future__ import annotations

import logging
import time
from types import FrameType

from celery import platforms
from celery.apps.worker import Worker, _shutdown_handler
from celery.worker import state

logger = logging.getLogger(__name__)

#: how often the soft shutdown looks whether the running tasks are done
POLL_S = 0.1


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

    def wait_for_soft_shutdown(self) -> None:
        """Celery's soft shutdown, ended early once no task is running (threaded pools)."""
        timeout = self.app.conf.worker_soft_shutdown_timeout
        if not (timeout > 0 and state.active_requests):
            return super().wait_for_soft_shutdown()
        logger.warning("Initiating Soft Shutdown, terminating in at most %s seconds", timeout)
        deadline = time.monotonic() + timeout
        while state.active_requests and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return None
