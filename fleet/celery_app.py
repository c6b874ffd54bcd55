"""The Celery app, built from settings + queues + routing.

``create_celery(settings)`` is the factory; ``fleet.app`` (what ``celery -A
fleet`` finds) is the app built from the process environment on first use.
Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery import signals as celery_signals
from celery.utils.imports import symbol_by_name
from flask import Flask

from fleet.canvas import captured_producer
from fleet.failover import RECONNECT
from fleet.heap import freeze_startup_objects
from fleet.pools import ACKS_LATE
from fleet.schedule import beat_schedule
from fleet.settings import Settings, load_settings
from fleet.sqlstore import ensure_wal, sqlite_connect_args
from fleet.tasks import TASK_MODULES
from fleet.worker.topology import DeclareTopology
from queues import DEFAULT_QUEUE, TASK_EXCHANGE, work_queues
from routing import Router

if TYPE_CHECKING:
    from fleet.metrics.worker import WorkerMetrics


class FlaskTask(Task):
    """Runs every task inside the Flask application context (the Celery+Flask pattern),
    so tasks can use the same Flask extensions and config as the front end."""

    #: parks far-future ETA messages in RabbitMQ instead of holding them (fleet.worker.parking)
    Strategy = "fleet.worker.parking:strategy"
    #: dead-letters tasks killed by their hard time limit, counts what only the worker's main
    #: process sees and never runs a task id twice: the chain is in fleet.worker.request
    Request = "fleet.worker.request:OnceRequest"
    #: countdown of the retry published when a task's process died (task_retry_on_worker_lost)
    default_retry_delay = 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.app.flask_app.app_context():
            return super().__call__(*args, **kwargs)


class FleetCelery(Celery):
    """A Celery app that knows its fleet settings and its Flask app."""

    #: every broker connection retries the failover list quickly (fleet.failover)
    amqp_cls = "fleet.failover:FailoverAMQP"
    #: the Flask app factory, named rather than imported: the front end (app.py) builds on
    #: this module, so the dependency goes one way
    flask_factory = "app:create_app"
    #: a worker's metrics, made at ``worker_init`` when metrics are on (fleet.metrics.setup)
    worker_metrics: WorkerMetrics | None = None

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.fleet_settings = settings
        super().__init__("fleet", task_cls=FlaskTask, **kwargs)

    def _get_backend(self) -> Any:
        """Celery's backend for ``result_backend``, with fleet's cheaper writes: the database one pooled
        per process, one statement a write (fleet.results); Redis's one round trip a write
        (fleet.results_redis)."""
        from celery.app import backends
        from celery.backends.database import DatabaseBackend
        from celery.backends.redis import RedisBackend

        from fleet.results import PooledDatabaseBackend
        from fleet.results_redis import OneTripRedisBackend

        backend, url = backends.by_url(self.backend_cls or self.conf.result_backend, self.loader)
        backend = {DatabaseBackend: PooledDatabaseBackend, RedisBackend: OneTripRedisBackend}.get(backend, backend)
        return backend(app=self, url=url)

    @cached_property
    def Worker(self) -> type:  # noqa: N802 - Celery's name
        """Celery's worker with fleet's TERM (fleet.worker.term)."""
        return self.subclass_with_self("fleet.worker.term:FleetWorker")

    @cached_property
    def flask_app(self) -> Flask:
        """The front end's Flask app, built on this Celery app (tasks run in its context)."""
        return symbol_by_name(self.flask_factory)(self.fleet_settings, celery=self)

    def producer_or_acquire(self, producer: Any = None) -> Any:
        """Celery's, except that a canvas being captured for the bounded publisher publishes into
        the capture (fleet.canvas): canvases drop the ``producer=`` they are given."""
        return super().producer_or_acquire(producer or captured_producer())


def celery_config(settings: Settings, registered: Callable[[], Container[str]]) -> dict[str, Any]:
    """Celery configuration derived from ``settings``: the production defaults.

    ``registered`` returns the task names the app registers (for the router).
    """
    return {
        "broker_url": settings.broker_url,
        # Celery prefers a raw CELERY_BROKER_URL from the environment over broker_url; connections
        # are made from these two, so they carry the py-amqp-pinned URL (fleet.transport).
        "broker_read_url": settings.broker_url,
        "broker_write_url": settings.broker_url,
        "broker_use_ssl": {"ca_certs": settings.broker_ca_file, "cert_reqs": 2} if settings.broker_ca_file else False,
        # Nothing lost on the way in: confirms, persistent messages, retry publishing.
        # A failover list is walked in order (round-robin from the first URL on every
        # new connection), with short pauses between rounds (fleet.failover).
        "broker_transport_options": {"confirm_publish": True, **RECONNECT},
        "broker_failover_strategy": "round-robin",
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker waits for the broker forever
        "broker_heartbeat": 30,
        "task_default_delivery_mode": "persistent",
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
        # Topology and routing come from queues.py and routing.py only.
        "task_queues": work_queues(settings.queue_type, settings.delivery_limit),
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_exchange": TASK_EXCHANGE.name,
        "task_default_routing_key": DEFAULT_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": (Router(registered),),
        # JSON only: pickle is never accepted.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Nothing lost in the worker: ack after the task ran; a killed child's task is
        # redelivered; a failure or timeout is rejected, i.e. dead-lettered to <queue>.dlq.
        "task_acks_late": ACKS_LATE,  # fleet worker sets its pool's (fleet.pools)
        "task_reject_on_worker_lost": True,
        # A task whose process died is retried (counted against max_retries), so a poison
        # task that kills its process ends in <queue>.dlq after a bounded number of runs.
        "task_retry_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": False,
        "task_track_started": True,
        # fleet worker sets its pool's; this is for a worker with no pool spec (a plain `celery worker`)
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_consumer": "fleet.worker.consumer:FleetConsumer",
        # Results.
        "result_backend": settings.results_url,
        "result_expires": settings.result_expires,
        "result_extended": True,
        "database_engine_options": {"connect_args": sqlite_connect_args(30)} if _is_sqlite(settings) else {},
        # Events cost throughput; Flower users switch them on with FLEET_TASK_EVENTS=1.
        "worker_send_task_events": settings.task_events,
        # task-sent events come from fleet.sent_events for every publish path (off here, or send_task's twice)
        "task_send_sent_event": False,
        # Schedule.
        "beat_schedule": beat_schedule(),
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
        # Any number of beats: the one holding the broker's leader lock sends (fleet.beat).
        "beat_scheduler": "fleet.beat:LeaderScheduler",
        "timezone": "UTC",
        "enable_utc": True,
        "include": [*TASK_MODULES, *settings.extra_task_modules],
    }


def create_celery(settings: Settings | None = None) -> FleetCelery:
    """Build the fleet's Celery app and make it the current one."""
    settings = settings or load_settings()
    prepare_var_dir(settings)
    app = FleetCelery(settings)
    app.config_from_object(celery_config(settings, registered=lambda: app.tasks))
    app.steps["consumer"].add(DeclareTopology)
    app.steps["consumer"].add("fleet.worker.health:Heartbeat")  # liveness/readiness files for probes
    app.steps["consumer"].add("fleet.worker.pausing:HonourPauses")  # paused queues stay paused (fleet.ops.pause)
    app.set_current()
    app.set_default()
    # Import the task modules now so the router knows every registered name when
    # publishing, not only inside a worker.
    app.loader.import_default_modules()
    from fleet.metrics import setup as metrics
    from fleet.worker import logwrites, tasklog

    tasklog.connect()
    logwrites.connect()
    celery_signals.worker_init.connect(build_flask_app, dispatch_uid="fleet.flask_app", weak=False)
    # Started: the heap that lives as long as the process leaves the collector's full passes (fleet.heap).
    for started in (celery_signals.worker_ready, celery_signals.worker_process_init):  # threads; prefork children
        started.connect(freeze_startup_objects, dispatch_uid=f"fleet.heap.{started.name}", weak=False)
    if settings.metrics_enabled:
        metrics.connect(app)
    if settings.task_events:
        from fleet import sent_events

        sent_events.connect(app)
    return app


def build_flask_app(sender: Any = None, **_: Any) -> None:
    """``worker_init``: build the Flask app in the main process, before the pool forks.

    Every pool child (a new one after each ``max_tasks_per_child``) inherits it;
    built lazily it was imported inside each child's first task, about 12% of a
    child's time under short tasks (py-spy, docs/PERFORMANCE.md).
    """
    sender.app.flask_app  # noqa: B018 - the cached property is the point


def _is_sqlite(settings: Settings) -> bool:
    return settings.results_url.startswith("db+sqlite")


def prepare_var_dir(settings: Settings) -> None:
    """Create the state directories and put the SQLite results file in WAL mode,
    so many worker processes can write results without 'database is locked'."""
    for directory in (settings.var_dir, settings.reports_dir, settings.data_dir, settings.var_dir / "state"):
        directory.mkdir(parents=True, exist_ok=True)
    if _is_sqlite(settings):
        path = settings.results_url.removeprefix("db+sqlite:///")
        ensure_wal(path)
