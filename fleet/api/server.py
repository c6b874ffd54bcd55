"""Serving the API under gunicorn: the command line ``fleet api`` runs, and gunicorn's hooks.

gthread workers: a request mostly waits on RabbitMQ's confirm, so threads
serve many at once. prometheus-client's multiprocess directory is wiped here,
before any worker starts (stale files would resurrect dead workers' counts),
and a dead worker's files are merged by ``child_exit``.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from fleet.settings import Settings, load_settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable; set for gunicorn, never read here


def gunicorn_argv(settings: Settings) -> list[str]:
    access_log = ["--access-logfile", "-"] if settings.api_access_log else []
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        settings.api_bind,
        "--workers",
        str(settings.api_workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(settings.api_threads),
        # Longer than any request can take (publish timeouts are seconds), short enough to replace a stuck worker.
        "--timeout",
        "30",
        "--graceful-timeout",
        "20",
        *access_log,
        # The control socket has one default path per user: several APIs on a host would fight over it.
        "--no-control-socket",
        "--config",
        "python:fleet.api.server",
        "app:create_app()",
    ]


def prepare_metrics_dir(settings: Settings) -> str:
    path = settings.api_metrics_path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def exec_gunicorn(settings: Settings) -> None:
    """Replace this process with gunicorn serving ``app:create_app()``."""
    os.environ[MULTIPROC_ENV] = prepare_metrics_dir(settings)
    argv = gunicorn_argv(settings)
    os.execv(argv[0], argv)


# -- gunicorn hooks (this module is also gunicorn's --config) ---------------------


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges, fold its counters into the archive (they stay in the sum)."""
    from fleet.metrics import archive

    archive.retire(load_settings().api_metrics_path, worker.pid)
