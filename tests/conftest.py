"""Shared fixtures: a private RabbitMQ vhost, loopback peers, and real fleet workers.

Everything here talks to real services; nothing is mocked. A test run owns its
vhost and its var directory, and removes both when it ends.

Tests marked ``pure`` form the fast tier (``make test-fast``): they need no
service at all, so they must not ask for a fixture that does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.celery_app import FleetCelery, create_celery
from fleet.pools import POOLS
from fleet.settings import ROOT, Settings, load_settings
from fleet.testing.broker import Vhost
from fleet.testing.ports import free_port_block
from fleet.testing.processes import FleetProcess, start_worker
from tests.support.api import ApiServer
from tests.support.apps import app_for
from tests.support.disposable_rabbit import DisposableRabbit
from tests.support.ledger import Ledger
from tests.support.peers import HTTPPeer, SMTPPeer

#: fixtures that reach a running service (RabbitMQ, the loopback peers, Redis)
SERVICE_FIXTURES = frozenset(
    {
        "vhost",
        "smtp",
        "http_peer",
        "celery_app",
        "fleet_workers",
        "private_env",
        "ledger",
        "rabbit",
        "ops_env",
        "ops_api",
        "default_worker",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A ``pure`` test that asks for a service would make the fast tier need one: refuse it at collection."""
    for item in items:
        if item.get_closest_marker("pure"):
            services = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            if services:
                raise pytest.UsageError(f"{item.nodeid} is marked pure but uses {sorted(services)}")


@pytest.fixture(scope="session")
def vhost() -> Iterator[Vhost]:
    vhost = Vhost().create()
    yield vhost
    vhost.delete()


@pytest.fixture(scope="session")
def smtp() -> Iterator[SMTPPeer]:
    peer = SMTPPeer().start()
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def http_peer() -> Iterator[HTTPPeer]:
    peer = HTTPPeer().start()
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def fleet_env(vhost: Vhost, smtp: SMTPPeer, http_peer: HTTPPeer, var_dir: Path) -> dict[str, str]:
    """The environment every fleet process of this run gets."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLEET_", "CELERY_"))}
    env.update(
        CELERY_BROKER_URL=vhost.url,
        FLEET_VAR_DIR=str(var_dir),
        FLEET_SMTP_HOST="127.0.0.1",
        FLEET_SMTP_PORT=str(smtp.port),
        FLEET_PAYMENT_GATEWAY_URL=http_peer.url("/payments"),
        FLEET_SYNC_SOURCE_URL=http_peer.url("/sync"),
        FLEET_RETRY_BACKOFF_BASE="0.5",
        FLEET_DIGEST_RECIPIENTS="digest-a@example.test,digest-b@example.test",
        # Fault tests use their own tasks, added the way a team adds its module.
        FLEET_TASK_MODULES="tests.support.chaos_tasks",
        PYTHONPATH=str(ROOT),
        # every worker process of the run gets its own metrics port, away from a running fleet's
        FLEET_METRICS_PORT=str(free_port_block(sum(spec.replicas for spec in POOLS.values()))),
    )
    return env


@pytest.fixture(scope="module")
def rabbit() -> Iterator[DisposableRabbit]:
    """A disposable RabbitMQ node of the module's own, to stop, freeze or push into alarms."""
    node = DisposableRabbit(consumer_timeout=120, disk_free_limit=50_000_000).start()
    yield node
    node.remove()


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    ledger = Ledger()
    yield ledger
    ledger.drop()


@pytest.fixture(scope="module")
def pure_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetCelery]:
    """A fleet app that builds messages and never connects (its broker URL is a closed port): pure tests."""
    env = {"FLEET_VAR_DIR": str(tmp_path_factory.mktemp("pure")), "CELERY_BROKER_URL": "amqp://guest@127.0.0.1:1//"}
    app = create_celery(load_settings(env))
    yield app
    app.close()


@pytest.fixture(scope="session")
def settings(fleet_env: dict[str, str]) -> Settings:
    return load_settings(fleet_env)


@pytest.fixture(scope="session")
def celery_app(settings: Settings) -> FleetCelery:
    return create_celery(settings)


@pytest.fixture(autouse=True)
def _run_app_is_current(request: pytest.FixtureRequest) -> None:
    """Every test starts with the run's app current: shared tasks and canvas signatures
    publish through the current app, so a leaked one would send work to another broker.
    Pure tests build no app (it needs the run's vhost)."""
    if request.node.get_closest_marker("pure"):
        return
    celery_app: FleetCelery = request.getfixturevalue("celery_app")
    celery_app.set_current()
    celery_app.set_default()


@pytest.fixture(scope="session")
def log_dir(var_dir: Path) -> Path:
    return var_dir / "log"


@pytest.fixture(scope="session")
def fleet_workers(
    fleet_env: dict[str, str], log_dir: Path, celery_app: FleetCelery
) -> Iterator[dict[str, FleetProcess]]:
    """One worker per pool, each started with ``fleet worker <pool>``, for the whole run."""
    workers: dict[str, FleetProcess] = {}
    try:
        for pool in POOLS:
            workers[pool] = start_worker(pool, fleet_env, log_dir)
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


@pytest.fixture
def private_env(fleet_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """``fleet_env`` on a vhost and var directory of this test's own (no session workers there)."""
    vhost = Vhost().create()
    try:
        yield {**fleet_env, "CELERY_BROKER_URL": vhost.url, "FLEET_VAR_DIR": str(tmp_path / "var")}
    finally:
        vhost.delete()


@pytest.fixture
def private_app(private_env: dict[str, str], celery_app: FleetCelery) -> Iterator[FleetCelery]:
    """A Celery app on ``private_env``; the run's app is current again afterwards."""
    with app_for(private_env) as app:
        yield app


#: the operator tests' tokens (fleet.api.auth): one per scope
OPERATE, READ, ENQUEUE = (f"{scope}-{uuid.uuid4().hex}" for scope in ("operate", "read", "enqueue"))
TOKENS = f"ops:operate:{OPERATE},viewer:read:{READ},client:enqueue:{ENQUEUE}"


@pytest.fixture
def ops_env(private_env: dict[str, str]) -> dict[str, str]:
    """``private_env`` with scoped API tokens and quick retries (a dead letter in about a second)."""
    return {
        **private_env,
        "FLEET_API_TOKENS": TOKENS,
        "FLEET_RETRY_BACKOFF_BASE": "0.05",
        # its workers' /metrics ports, apart from the run's workers
        "FLEET_METRICS_PORT": str(free_port_block(sum(spec.replicas for spec in POOLS.values()))),
    }


@pytest.fixture
def ops_api(ops_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    """``fleet api`` on ``ops_env`` (the ops API and the console)."""
    server = ApiServer(ops_env, log_dir, FLEET_API_TOKENS=TOKENS).start()
    yield server
    server.stop()


@pytest.fixture
def default_worker(ops_env: dict[str, str], log_dir: Path) -> Iterator[list[FleetProcess]]:
    """The default pool's worker on ``ops_env``, in a list a test may restart it in."""
    workers = [start_worker("default", ops_env, log_dir)]
    yield workers
    for worker in workers:
        worker.stop()
