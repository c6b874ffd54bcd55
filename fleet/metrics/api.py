"""The API's own Prometheus metrics, served on its ``/metrics``.

Labels stay low-cardinality: the route *template* (never the raw path or a
task id), the HTTP method, the status, the queue, and the task name, with any
name the fleet does not register reported as ``other``.

Under gunicorn every worker process counts on its own; ``fleet api`` points
prometheus-client's multiprocess mode at ``FLEET_API_METRICS_DIR`` (wiped at
each start) and :func:`render` adds the workers up. The metrics live in their
own registry and are created on the API's first request, so a Celery worker
that builds the Flask app for its application context never exports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values

from fleet.metrics.archive import ArchivingMultiProcessCollector
from fleet.metrics.labels import OTHER

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PUBLISH_KINDS = ("task", "workflow", "batch", "revoke")
FAILURE_REASONS = ("unavailable",)
#: Confirmed publishes on loopback take about a millisecond; a blocked broker takes the whole timeout.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics(NamedTuple):
    registry: CollectorRegistry
    requests: Counter
    publish_seconds: Histogram
    publish_failures: Counter
    tasks_published: Counter


@cache
def api_metrics() -> ApiMetrics:
    registry = CollectorRegistry(auto_describe=True)
    return ApiMetrics(
        registry,
        Counter(
            "fleet_api_requests",
            "HTTP requests answered by the API, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        ),
        Histogram(
            "fleet_api_publish_duration_seconds",
            "From publishing to RabbitMQ's confirm (or the failure), per publish kind.",
            ["kind"],
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        ),
        Counter(
            "fleet_api_publish_failures",
            "Publishes RabbitMQ did not confirm in time (answered 503), per kind and reason.",
            ["kind", "reason"],
            registry=registry,
        ),
        Counter(
            "fleet_api_tasks_published",
            "Task messages RabbitMQ confirmed, per queue and task.",
            ["queue", "task"],
            registry=registry,
        ),
    )


def initialise(queues: Iterable[str], tasks: Iterable[str]) -> ApiMetrics:
    """Create every queue x task and failure series at zero, so rates and absence alerts work from the start."""
    metrics = api_metrics()
    tasks = (*tasks, OTHER)
    for queue in queues:
        for task in tasks:
            metrics.tasks_published.labels(queue, task)
    for kind in PUBLISH_KINDS:
        metrics.publish_seconds.labels(kind)
        for reason in FAILURE_REASONS:
            metrics.publish_failures.labels(kind, reason)
    return metrics


def task_label(name: str, registered: Iterable[str]) -> str:
    return name if name in registered else OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def multiprocess_active() -> bool:
    """Whether prometheus-client was imported in multiprocess mode (set up by ``fleet api``)."""
    return values.ValueClass is not values.MutexValue


def render(metrics_dir: Path) -> tuple[bytes, str]:
    """The exposition text: summed over gunicorn workers in multiprocess mode, else this process."""
    if multiprocess_active():
        registry = CollectorRegistry()
        registry.register(ArchivingMultiProcessCollector(metrics_dir))  # exited workers' counts folded in
    else:
        registry = api_metrics().registry
    return generate_latest(registry), CONTENT_TYPE_LATEST
