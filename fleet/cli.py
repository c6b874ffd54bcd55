"""The ``fleet`` command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from fleet.pools import POOLS, PoolError
from fleet.settings import Settings, SettingsError, load_settings
from queues import WORK_QUEUES, backlog_policy


def _settings():  # noqa: ANN202 - click plumbing
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """fleet: a RabbitMQ-based, multi-queue Celery worker fleet."""


@main.command()
@click.argument("pool", type=click.Choice(list(POOLS)))
@click.option(
    "--index",
    type=int,
    default=None,
    help="Process number when several run on one host (node name <pool>-<index>@host).",
)
@click.option("--concurrency", "-c", default=None, help="Override the pool's concurrency.")
@click.option("--prefetch-multiplier", default=None, help="Override the pool's prefetch multiplier.")
@click.option("--max-tasks-per-child", default=None, help="Override child recycling by task count (0: never).")
@click.option("--pool-kind", default=None, help="Override the pool kind (prefork or threads).")
def worker(pool: str, index: int | None, pool_kind: str | None, **flags: str | None) -> None:
    """Start the worker for POOL with its tuned spec (fleet.pools)."""
    from fleet.worker.shutdown import term_starts_soft_shutdown

    term_starts_soft_shutdown()  # before Celery is imported
    from fleet.metrics import setup as metrics
    from fleet.worker.run import node_name, resolve_pool, run_worker

    settings = _settings()
    try:
        spec = resolve_pool(pool, settings, {**flags, "pool": pool_kind})
    except PoolError as exc:
        raise click.ClickException(str(exc)) from None
    node = node_name(spec, index)
    from fleet.worker import niceness

    niceness.apply(spec.nice)  # before any thread or child: they inherit it
    if settings.metrics_enabled:
        metrics.launch(settings, spec, node, index)  # before anything imports prometheus_client
    from fleet.celery_app import create_celery

    sys.exit(run_worker(create_celery(settings), spec, node))


@main.command()
def beat() -> None:
    """Start a beat scheduler; run two or more: one leads, the others stand by (fleet.beat)."""
    from fleet.celery_app import create_celery

    settings = _settings()
    app = create_celery(settings)
    app.start(["beat", f"--loglevel={settings.log_level}", f"--schedule={app.conf.beat_schedule_filename}"])


@main.command()
def api() -> None:
    """Serve the Flask front end under gunicorn on FLEET_API_BIND."""
    from fleet.api.server import check_bind_free, exec_gunicorn

    settings = _settings()
    try:
        check_bind_free(settings.api_bind)
    except OSError as exc:
        raise click.ClickException(f"the API cannot listen on {settings.api_bind}: {exc.strerror or exc}") from None
    exec_gunicorn(settings)


@main.command()
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (as in the README).")
@click.option(
    "--write-readme",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Rewrite the pool table of this README between its markers.",
)
def pools(markdown: bool, write_readme: Path | None) -> None:
    """Print the pool table: kind, concurrency, prefetch, time limits, child recycling, replicas, why."""
    from fleet.deploy import pooltable

    if write_readme:
        changed = pooltable.write_readme(write_readme)
        click.echo(f"{write_readme}: pool table {'rewritten' if changed else 'up to date'}")
        return
    click.echo(pooltable.markdown_table() if markdown else pooltable.text_table())


@main.command()
@click.option("--liveness", "probe", flag_value="liveness", help="Pass while the worker's loop is alive.")
@click.option("--readiness", "probe", flag_value="readiness", help="Pass while the worker is ready for tasks.")
@click.option("--node", default=None, help="Check this Celery node only (default: every node under FLEET_VAR_DIR).")
@click.option("--max-age", type=float, default=None, help="Seconds after which a heartbeat is stale.")
def health(probe: str | None, node: str | None, max_age: float | None) -> None:
    """Probe a worker from its health files (no Celery app, no broker: safe as a Kubernetes probe)."""
    from fleet.worker.health import DEFAULT_MAX_AGE, check, health_dir

    if probe is None:
        raise click.UsageError("choose --liveness or --readiness")
    directory = health_dir(_settings().var_dir)
    problems = check(directory, probe == "readiness", node, DEFAULT_MAX_AGE if max_age is None else max_age)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{probe}: ok")


@main.command()
@click.argument("target", type=click.Choice(["supervisor", "k8s", "prometheus"]))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write (default: deploy/<target> under the current directory).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the folder differs from a fresh render.")
@click.option("--banner", is_flag=True, help="Then print the API URL, metrics ports and a curl example.")
def render(target: str, out: Path | None, check: bool, banner: bool) -> None:
    """Render the supervisor config, the Kubernetes manifests or the Prometheus config from the pool specs."""
    from fleet.deploy import RENDERERS, files, supervisor

    out = out or Path("deploy") / target
    rendered = RENDERERS[target]()
    if check:
        problems = files.drift(rendered, out)
        for problem in problems:
            click.echo(problem, err=True)
        if problems:
            raise click.ClickException(f"{out} is stale: run `fleet render {target}` and commit the result")
        click.echo(f"{out}: up to date")
    else:
        for path in files.write(rendered, out):
            click.echo(f"rendered {path}")
    if banner:
        click.echo(supervisor.banner(_settings()))


@main.group()
def dlq() -> None:
    """Inspect, replay and purge dead-lettered tasks (<queue>.dlq)."""


def _broker():  # noqa: ANN202 - click plumbing
    from kombu import Connection

    return Connection(_settings().broker_url, transport_options={"confirm_publish": True})


_QUEUE = click.argument("queue", type=click.Choice(list(WORK_QUEUES)))


@dlq.command("list")
@click.argument("queue", required=False, type=click.Choice(list(WORK_QUEUES)))
@click.option("--limit", default=20, show_default=True, help="Messages to show per queue.")
@click.option("--offset", default=0, show_default=True, help="Skip this many first (they stay in place).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_list(queue: str | None, limit: int, offset: int, as_json: bool) -> None:
    """Show dead letters per queue: task, id, reason, retries used, and the exception it died of."""
    from fleet import dlq as dead_letters
    from fleet.celery_app import create_celery

    backend = create_celery(_settings()).backend  # the FAILURE rows say why each task died
    with _broker() as connection:
        counts = dead_letters.depths(connection)
        letters = [
            letter
            for name in ([queue] if queue else WORK_QUEUES)
            for letter in dead_letters.peek(connection, name, limit, backend, offset=offset)
        ]
    if as_json:
        click.echo(dead_letters.to_json(letters))
        return
    for name, count in counts.items():
        if queue in (None, name):
            click.echo(f"{name}.dlq: {count} dead letters")
    for letter in letters:
        click.echo(
            f"  {letter.queue}  {letter.task}  {letter.task_id}  {letter.reason} x{letter.deaths}"
            f"  retries {letter.retries}  {letter.args}"
        )
        if letter.error:
            click.echo(f"      {letter.error}")
        if letter.traceback:
            click.echo(f"      traceback: {letter.traceback}")


@dlq.command("replay")
@_QUEUE
@click.option("--id", "task_ids", multiple=True, help="Replay only this task id (repeat for several).")
@click.option("--limit", type=int, default=None, help="Replay at most this many.")
def dlq_replay(queue: str, task_ids: tuple[str, ...], limit: int | None) -> None:
    """Move dead letters back to the queue they came from, each with a fresh retry budget."""
    from fleet import dlq as dead_letters

    with _broker() as connection:
        moved = dead_letters.replay(connection, queue, limit=limit, task_ids=task_ids or None)
    click.echo(f"replayed {moved} message(s) from {queue}.dlq (retry count reset: each gets its full retries again)")


@dlq.command("purge")
@_QUEUE
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(queue: str, yes: bool) -> None:
    """Delete every dead letter of QUEUE (asks first)."""
    from fleet import dlq as dead_letters

    if not yes:
        click.confirm(f"Delete every message in {queue}.dlq? This cannot be undone", abort=True)
    with _broker() as connection:
        purged = dead_letters.purge(connection, queue)
    click.echo(f"purged {purged} message(s) from {queue}.dlq")


@dlq.command("delete")
@_QUEUE
@click.option("--id", "task_ids", multiple=True, required=True, help="Delete this task id's dead letter (repeatable).")
def dlq_delete(queue: str, task_ids: tuple[str, ...]) -> None:
    """Delete chosen dead letters of QUEUE for good (purge deletes them all)."""
    from fleet import dlq as dead_letters

    with _broker() as connection:
        deleted = dead_letters.delete(connection, queue, task_ids)
    click.echo(f"deleted {deleted} message(s) from {queue}.dlq")
    if deleted < len(set(task_ids)):
        sys.exit(1)


@main.group()
def queue() -> None:
    """Pause and resume a work queue on every worker (the flag survives restarts; messages wait in RabbitMQ);
    print the broker policy fleet's queues want."""


def _pauses():  # noqa: ANN202 - click plumbing
    from fleet.ops.pause import open_pauses

    return open_pauses(_settings())


@queue.command("pause")
@_QUEUE
def queue_pause(queue: str) -> None:
    """Stop every worker consuming QUEUE until it is resumed (running tasks finish)."""
    import getpass

    from fleet.celery_app import create_celery
    from fleet.ops.pause import pause_queue
    from fleet.publish import publisher_for

    celery = create_celery(_settings())
    pause_queue(_pauses(), publisher_for(celery), celery, queue, f"cli:{getpass.getuser()}")
    click.echo(f"paused {queue}: workers stop consuming it now (or within a heartbeat); messages wait")


@queue.command("resume")
@_QUEUE
def queue_resume(queue: str) -> None:
    """Let QUEUE's pool consume it again (within a worker heartbeat)."""
    from fleet.ops.pause import resume_queue

    was = resume_queue(_pauses(), queue)
    click.echo(f"resumed {queue}" if was else f"{queue} was not paused")


@queue.command("list")
def queue_list() -> None:
    """Show the paused queues, who paused them and when."""
    import datetime

    paused = _pauses().paused()
    for name in WORK_QUEUES:
        pause = paused.get(name)
        when = datetime.datetime.fromtimestamp(pause.at, datetime.UTC).isoformat(timespec="seconds") if pause else ""
        click.echo(f"{name}: paused by {pause.by} at {when}" if pause else f"{name}: consuming")


@queue.command("policy")
@click.option("--vhost", default=None, help="The vhost to set it on (default: CELERY_BROKER_URL's).")
def queue_policy(vhost: str | None) -> None:
    """Print the rabbitmqctl command that makes every fleet queue lazy (for RabbitMQ before 3.12).

    Before 3.12 a classic queue keeps its backlog in memory, and publisher confirms stall with
    it under load (README, "Topology"). Later brokers ignore the key.
    """
    import shlex

    from kombu import Connection

    vhost = vhost if vhost is not None else Connection(_settings().broker_url).virtual_host
    click.echo(shlex.join(["rabbitmqctl", *backlog_policy().rabbitmqctl_args(vhost)]))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--timeout", default=1.0, show_default=True, help="Seconds to wait for workers to answer.")
def status(as_json: bool, timeout: float) -> None:
    """Queues, pools, workers and dead letters, from the broker and the workers themselves."""
    import json

    from fleet.celery_app import create_celery
    from fleet.metrics.fleet_status import fleet_status, render

    facts = fleet_status(create_celery(_settings()), timeout)
    click.echo(json.dumps(facts, indent=2) if as_json else render(facts), nl=as_json)


@main.group()
def dev() -> None:
    """Development stand-ins for the demo's peers (never run in production)."""


def _serve_until_term(serve: Callable[[Settings], None], what: str) -> None:
    """Run ``serve`` until supervisord's TERM, then exit 0: stopping a stand-in is not a failure."""
    import signal

    from fleet.devpeers import DevPeerRefused

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        serve(_settings())
    except DevPeerRefused as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{what} cannot listen: {exc}") from None
    except KeyboardInterrupt:
        pass


@dev.command("smtp")
def dev_smtp() -> None:
    """An SMTP sink on FLEET_SMTP_HOST:FLEET_SMTP_PORT that keeps every message under var/dev/mail."""
    from fleet.devpeers import serve_smtp

    _serve_until_term(serve_smtp, "the SMTP sink")


@dev.command("gateway")
def dev_gateway() -> None:
    """A payment gateway on FLEET_PAYMENT_GATEWAY_URL that honours Idempotency-Key."""
    from fleet.devpeers import serve_gateway

    _serve_until_term(serve_gateway, "the payment gateway stand-in")


@dev.command("conf")
def dev_conf() -> None:
    """Print the supervisor config `make run` starts: with the stand-ins unless FLEET_ENV=production."""
    from fleet.deploy.supervisor import SUPERVISOR_DEV_PATH, SUPERVISOR_PATH

    click.echo(SUPERVISOR_PATH if _settings().is_production else SUPERVISOR_DEV_PATH)


@main.command("supervisor-auth")
def supervisor_auth() -> None:
    """Write supervisord's socket credentials under FLEET_VAR_DIR once (the rendered config includes them)."""
    from fleet.deploy.supervisor_auth import ensure_auth

    click.echo(f"supervisor credentials: {ensure_auth(_settings().var_dir)}")
