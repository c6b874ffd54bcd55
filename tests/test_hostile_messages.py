"""No message stops a worker: whatever arrives on a work queue runs or is dead-lettered.

A fixed corpus of hostile shapes (tests/corpus/hostile_messages.json) on classic and
quorum queues, and a hypothesis fuzz of headers, properties and bodies, each against
one live ``fleet worker default`` on a private vhost, with healthy tasks published
around the hostile ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.celery_app import FleetCelery
from fleet.pools import metrics_port
from fleet.testing.ports import free_port_block
from fleet.testing.processes import FleetProcess, start_worker
from tests.support.apps import app_for
from tests.support.hostile import HEALTHY_TASK, DeadLetters, Hostile, account, corpus, from_corpus, publish
from tests.support.hostile_fuzz import hostile_messages
from tests.support.metrics import wait_for_scrape


def _healthy(app: FleetCelery, count: int) -> list[Any]:
    return [app.send_task(HEALTHY_TASK, (n,)) for n in range(count)]


def _assert_healthy_done(healthy: list[Any], dead: DeadLetters) -> None:
    for result in healthy:
        assert result.get(timeout=60)["source_id"] is not None
    assert not {result.id for result in healthy} & {str((m.headers or {}).get("id")) for m in dead.messages.values()}, (
        "a healthy task was dead-lettered"
    )


def _assert_alive(worker: FleetProcess) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, f"the worker exited:\n{worker.log()[-3000:]}"
    assert "Unrecoverable error" not in worker.log()


@pytest.fixture
def hostile_env(private_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``private_env`` with metrics ports and a metrics directory of its own."""
    return {**private_env, "FLEET_METRICS_PORT": str(free_port_block(8)), "FLEET_METRICS_DIR": str(tmp_path / "m")}


@pytest.fixture
def hostile_app(hostile_env: dict[str, str], celery_app: FleetCelery) -> Iterator[FleetCelery]:
    with app_for(hostile_env) as app:
        yield app


@pytest.fixture
def default_worker(hostile_env: dict[str, str], log_dir: Path) -> Iterator[FleetProcess]:
    worker = start_worker("default", hostile_env, log_dir)
    yield worker
    worker.stop()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_corpus_is_dead_lettered_or_run_and_the_worker_lives(
    queue_type: str, hostile_env: dict[str, str], log_dir: Path, celery_app: FleetCelery
) -> None:
    env = {**hostile_env, "FLEET_QUEUE_TYPE": queue_type}
    entries = corpus()
    messages = [from_corpus(entry) for entry in entries]
    worker = start_worker("default", env, log_dir)
    try:
        with app_for(env) as app:
            url = app.fleet_settings.broker_url
            dead = DeadLetters(url)
            # Healthy tasks before, between (in the same prefetch window) and after the hostile ones.
            healthy = _healthy(app, 4)
            for start in range(0, len(messages), 4):
                publish(url, messages[start : start + 4])
                healthy += _healthy(app, 1)
            healthy += _healthy(app, 4)
            account(app, dead, messages)
            _assert_healthy_done(healthy, dead)
            _assert_alive(worker)

            rejected = {h.tag for entry, h in zip(entries, messages, strict=True) if entry["expect"] == "dlq"}
            letters = dead.wait_for(rejected)
            for entry, hostile in zip(entries, messages, strict=True):
                if entry["expect"] == "dlq":
                    assert hostile.tag in letters, f"{entry['name']!r} was not dead-lettered"
                    assert letters[hostile.tag].headers["x-death"][0]["reason"] == "rejected"
                    # unrun; an unknown task's FAILURE (NotRegistered) is stored for whoever waits on it
                    state = "FAILURE" if entry["reason"] == "unknown_task" else "PENDING"
                    assert _state(app, hostile) == state, f"{entry['name']!r} ran"
                else:
                    assert _state(app, hostile) != "PENDING", f"{entry['name']!r} did not run"
            expected = Counter(entry["reason"] for entry in entries if entry["expect"] == "dlq")
            port = metrics_port(int(env["FLEET_METRICS_PORT"]), "default")
            scrape = wait_for_scrape(
                port, lambda s: s.total("fleet_messages_rejected_total", queue="default") >= expected.total()
            )
            for reason, count in expected.items():
                assert scrape.total("fleet_messages_rejected_total", queue="default", reason=reason) == count, reason
            assert scrape.total("fleet_messages_rejected_total") == expected.total(), "nothing else was rejected"
            log = worker.log()
            for entry, hostile in zip(entries, messages, strict=True):
                if entry["expect"] == "dlq" and isinstance(hostile.task_id, str) and hostile.task_id:
                    assert f"reason={entry['reason']} task=" in log and hostile.task_id in log, entry["name"]
            _assert_healthy_done(healthy, dead)  # none of them reached the dead letters read since
    finally:
        worker.stop()


def _state(app: FleetCelery, hostile: Hostile) -> str:
    task_id = hostile.task_id
    return app.AsyncResult(task_id).state if isinstance(task_id, str) and task_id else "PENDING"


@settings(
    max_examples=100,
    deadline=None,
    database=None,  # no .hypothesis directory in the tree; a failure prints its example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(hostile_messages(), min_size=1, max_size=6))
def test_fuzzed_messages_never_stop_the_worker(
    batch: list[Hostile], hostile_app: FleetCelery, default_worker: FleetProcess
) -> None:
    url = hostile_app.fleet_settings.broker_url
    dead = DeadLetters(url)
    publish(url, batch)
    healthy = _healthy(hostile_app, 2)
    account(hostile_app, dead, batch)
    _assert_healthy_done(healthy, dead)
    _assert_alive(default_worker)
