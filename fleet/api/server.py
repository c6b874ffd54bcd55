"""Serving the API under gunicorn: the command line ``fleet api`` runs, and gunicorn's hooks.

gevent workers by default: a request mostly waits on RabbitMQ's confirm, and
in a greenlet that wait, the hand-off to the confirm streams and the answer
cost no thread switches and no contention for the GIL (a third less CPU per
request than gthread's threads, docs/PERFORMANCE.md).
``FLEET_API_WORKER_CLASS=gthread`` serves with ``FLEET_API_THREADS`` threads
instead, for code that blocks without yielding to gevent (C extensions that
wait inside).

gunicorn answers a few errors itself, before Flask sees the request (a request
line or a header over its limits, a malformed request): the limits are raised
so that anything a client can reasonably send reaches Flask (which answers an
over-long task id with a JSON 422), and what gunicorn still refuses is
answered in the API's one JSON error shape, not an HTML page.

prometheus-client's multiprocess directory is wiped here,
before any worker starts (stale files would resurrect dead workers' counts),
and a dead worker's files are merged by ``child_exit``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from typing import Any

from fleet.settings import MULTIPROC_ENV, Settings, load_settings

#: gunicorn's largest request line (its default is 4094); longer ones get the JSON 414 below.
LIMIT_REQUEST_LINE = 8190
#: bytes per header line (gunicorn's default 8190): room for long bearer tokens and trace headers.
LIMIT_REQUEST_FIELD_SIZE = 16384
#: gunicorn's status -> the API's stable error code (fleet.api.errors.HTTP_CODES for the rest).
GUNICORN_CODES = {
    400: "malformed_request",
    403: "forbidden",
    414: "request_line_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def gunicorn_argv(settings: Settings) -> list[str]:
    access_log = ["--access-logfile", "-"] if settings.api_access_log else []
    threads = ["--threads", str(settings.api_threads)] if settings.api_worker_class == "gthread" else []
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        settings.api_bind,
        "--workers",
        str(settings.api_workers),
        "--worker-class",
        settings.api_worker_class,
        *threads,
        "--worker-connections",
        str(settings.api_connections),
        # Longer than any request can take (publish timeouts are seconds), short enough to replace a stuck worker.
        "--timeout",
        "30",
        "--graceful-timeout",
        "20",
        "--limit-request-line",
        str(LIMIT_REQUEST_LINE),
        "--limit-request-field_size",
        str(LIMIT_REQUEST_FIELD_SIZE),
        *access_log,
        # A listening socket per worker (SO_REUSEPORT): the kernel spreads new connections across the
        # workers; on one shared socket a worker often took every keep-alive connection, halving the rate.
        "--reuse-port",
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


def check_bind_free(bind: str) -> None:
    """Raise OSError if something already listens on ``bind`` (host:port; other forms are gunicorn's to check).

    With ``--reuse-port`` a second API started by the same user on a taken port would
    share it silently instead of failing. A plain bind still refuses a listened-on
    port (SO_REUSEADDR only lets it past a previous run's TIME_WAIT connections).
    """
    from gunicorn.util import parse_address

    address = parse_address(bind)
    if not isinstance(address, tuple):  # a unix socket path or an inherited fd
        return
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def exec_gunicorn(settings: Settings) -> None:
    """Replace this process with gunicorn serving ``app:create_app()``."""
    os.environ[MULTIPROC_ENV] = prepare_metrics_dir(settings)
    argv = gunicorn_argv(settings)
    os.execv(argv[0], argv)


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, answering the API's Error shape instead of an HTML page."""
    from gunicorn import util

    body = json.dumps(
        {
            "error": GUNICORN_CODES.get(status_int, f"http_{status_int}"),
            "message": f"{reason}: {mesg}" if mesg else reason,
            "status": status_int,
            "details": [],
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


# -- gunicorn hooks (this module is also gunicorn's --config) ---------------------


def on_starting(server: Any) -> None:
    """In the master, before any worker forks: every worker inherits the JSON error writer."""
    from gunicorn import util

    util.write_error = write_json_error


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges, fold its counters into the archive (they stay in the sum)."""
    from fleet.metrics import archive

    archive.retire(load_settings().api_metrics_path, worker.pid)


def post_worker_init(worker: Any) -> None:
    """In each worker, once the app is loaded: the start-up heap leaves the collector's sight (fleet.heap)."""
    from fleet.heap import tune_api_collector

    tune_api_collector()
