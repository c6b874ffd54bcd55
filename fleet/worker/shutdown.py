"""A worker's stop on TERM is bounded by its pool's soft-shutdown timeout.

Kept apart from the worker module: it must run before anything imports Celery.
"""

from __future__ import annotations

import os
import sys


def term_starts_soft_shutdown() -> None:
    """Make TERM (a rollout, a KEDA scale-in, ``supervisorctl stop``) a bounded stop.

    Celery's TERM is a warm shutdown: it waits for every running task, up to its
    hard time limit (10 minutes for reports). With ``REMAP_SIGTERM=SIGQUIT`` TERM
    starts Celery's soft shutdown instead: running tasks get the pool's
    ``soft_shutdown_timeout``, then the rest are cancelled and, acked late, go
    back to their queue for another worker. billiard reads the variable once, at
    import, so it is set before anything imports Celery.
    """
    if "billiard.common" in sys.modules:
        raise RuntimeError("set REMAP_SIGTERM before Celery is imported")
    os.environ["REMAP_SIGTERM"] = "SIGQUIT"
