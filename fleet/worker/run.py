"""Starting one pool's worker from its spec."""

from __future__ import annotations

import socket
from collections.abc import Mapping

import click
from celery.bin.celery import celery as celery_command

from fleet.celery_app import FleetCelery
from fleet.pools import PoolSpec, env_overrides, get_pool, with_overrides
from fleet.settings import Settings


def node_name(spec: PoolSpec, index: int | None = None, host: str | None = None) -> str:
    """A stable, unique Celery node name: ``<pool>[-<index>]@<host>``.

    Stable across restarts (no pid in it), so monitoring sees the same worker
    come back instead of a ghost and a newcomer.
    """
    host = host or socket.gethostname()
    return f"{spec.name}{'' if index is None else f'-{index}'}@{host}"


def resolve_pool(name: str, settings: Settings, flags: Mapping[str, str | int | None] | None = None) -> PoolSpec:
    """The pool spec with ``FLEET_POOL_<POOL>_*`` and then CLI flag overrides applied, checked."""
    spec = get_pool(name)
    spec = with_overrides(spec, env_overrides(spec, settings.pool_env))
    spec = with_overrides(spec, flags or {})
    spec.check(settings.broker_consumer_timeout)
    return spec


def worker_argv(spec: PoolSpec, node: str, settings: Settings) -> list[str]:
    """The ``celery worker`` arguments that run exactly ``spec``."""
    argv = [
        "worker",
        f"--queues={','.join(spec.queues)}",
        f"--pool={spec.pool}",
        f"--concurrency={spec.concurrency}",
        f"--prefetch-multiplier={spec.prefetch_multiplier}",
        f"--hostname={node}",
        f"--soft-time-limit={spec.soft_time_limit}",
        f"--time-limit={spec.time_limit}",
        # Revokes survive a restart (a revoked countdown task stays revoked).
        f"--statedb={settings.var_dir / 'state' / node.replace('@', '_')}.db",
        f"--loglevel={settings.log_level}",
    ]
    if spec.max_tasks_per_child:
        argv.append(f"--max-tasks-per-child={spec.max_tasks_per_child}")
    if spec.max_memory_per_child_kb and spec.pool == "prefork":  # threads: fleet.worker.limits recycles
        argv.append(f"--max-memory-per-child={spec.max_memory_per_child_kb}")
    if not settings.task_events:
        argv.append("--without-gossip")  # gossip rides on events; without them it is only chatter
    return argv


def run_worker(app: FleetCelery, spec: PoolSpec, node: str) -> int:
    """Run the worker in this process (so under Kubernetes it is PID 1 and gets TERM); its exit code.

    Runs Celery's own ``celery worker`` command, as ``app.worker_main`` does, but keeps the
    exit code that ``worker_main`` drops: a worker that gave up ("Unrecoverable error",
    exit code 1) looked like a clean stop to supervisor and Kubernetes.
    """
    app.conf.task_acks_late = spec.acks_late
    # TERM starts the soft shutdown (fleet.worker.shutdown). Not on idle: a worker running nothing
    # has nothing to wait for, its prefetched messages go back when its connection closes.
    app.conf.worker_soft_shutdown_timeout = spec.soft_shutdown_timeout
    app.conf.worker_enable_soft_shutdown_on_idle = False
    # Celery keeps a token bucket per task type and checks it per delivery; with no task
    # declaring a rate limit that is work for nothing.
    app.conf.worker_disable_rate_limits = not any(task.rate_limit for task in app.tasks.values())
    if spec.pool == "threads":
        from fleet.worker import limits

        limits.install(spec.soft_time_limit, spec.time_limit, spec.max_memory_per_child_kb)
        # After a reconnect Celery lowers the prefetch, then restores it with a basic.qos (an RPC)
        # from the thread that acks: here a task thread, reading the one socket the event loop
        # reads. Every thread then waited for a reply another had read, and the worker ran nothing
        # until RabbitMQ dropped the connection, 90 s on (tests/test_broker_faults.py).
        app.conf.worker_enable_prefetch_count_reduction = False
    argv = worker_argv(spec, node, app.fleet_settings)
    celery_command.params[0].default = app  # what ``app.start`` does: the command's --app is this app
    try:
        code = celery_command.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exit_:
        code = exit_.exit_code
    finally:
        celery_command.params[0].default = None
    code = code if isinstance(code, int) else 0
    if spec.pool == "threads":
        from fleet.worker import limits

        limits.exit_without_running_tasks(code)
    return code
