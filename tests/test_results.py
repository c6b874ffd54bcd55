"""Results are readable with the SQLite default, with Redis and with PostgreSQL."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fleet.api.accepted import open_accepted
from fleet.messages import new_task_id
from fleet.settings import load_settings
from fleet.testing.processes import start_worker
from tests.support.apps import app_for

CELERY = str(Path(sys.executable).with_name("celery"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"fleet_test_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    yield f"db+postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    subprocess.run([*psql, f"DROP DATABASE {name} WITH (FORCE)"], check=True, capture_output=True)


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield "redis://127.0.0.1:6379/15"
    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    for pattern in ("celery-task-meta-*", "fleet-accepted:*", "fleet-paused-queues"):
        for key in client.scan_iter(pattern):
            client.delete(key)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_results_are_readable(backend: str, private_env: dict[str, str], log_dir: Path, request) -> None:
    env = dict(private_env)
    if backend != "sqlite":
        env["CELERY_RESULT_BACKEND"] = request.getfixturevalue(f"{backend}_url")
    worker = start_worker("default", env, log_dir)
    try:
        with app_for(env) as app:
            result = app.send_task("tasks.fetch_data", (9, 2))
            assert result.get(timeout=30)["source_id"] == 9
    finally:
        worker.stop()
    # Another process reads it back with Celery's own command.
    shown = subprocess.run([CELERY, "-A", "fleet", "result", result.id], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "'source_id': 9" in shown.stdout


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_accepted_ids_live_beside_the_results(backend: str, private_env: dict[str, str], request) -> None:
    """What a cancel asks to tell a queued task from an unknown id, on every result backend."""
    env = dict(private_env)
    if backend != "sqlite":
        env["CELERY_RESULT_BACKEND"] = request.getfixturevalue(f"{backend}_url")
    settings = load_settings(env)
    Path(settings.var_dir).mkdir(parents=True, exist_ok=True)
    store = open_accepted(settings)
    assert store is not None
    ids = [str(uuid.uuid4()) for _ in range(3)]
    store.record(ids)
    store.record(ids[:1])  # recording again (a replayed answer) is harmless
    assert all(store.known(task_id) for task_id in ids)
    assert not store.known(str(uuid.uuid4()))
    # Each answer is read fresh: an id asked about before its record is known once recorded ...
    late = str(uuid.uuid4())
    assert not store.known(late)
    store.record([late])
    assert store.known(late)
    # The API's own ids (UUIDv7) are written just after their 202: a reader in another process
    # asking at once still finds each, and a fresh id nobody sent stays unknown.
    reader = open_accepted(settings)
    fresh = [new_task_id() for _ in range(3)]
    store.record(fresh)
    assert all(reader.known(task_id) for task_id in fresh)
    assert not reader.known(new_task_id())
    # ... and one past its retention is no longer known.
    short = open_accepted(dataclasses.replace(settings, result_expires=1))
    gone = str(uuid.uuid4())
    short.record([gone])
    assert short.known(gone)
    time.sleep(1.2)  # the shortest retention there is
    assert not short.known(gone)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_pause_flags_live_beside_the_results(backend: str, private_env: dict[str, str], request) -> None:
    """Every API and worker reads the same flags (fleet.ops.pause): two stores, one answer."""
    from fleet.ops.pause import open_pauses

    env = dict(private_env)
    if backend != "sqlite":
        env["CELERY_RESULT_BACKEND"] = request.getfixturevalue(f"{backend}_url")
    writer, reader = open_pauses(load_settings(env)), open_pauses(load_settings(env))
    writer.pause("email", "ops")
    writer.pause("email", "someone-else")  # a second pause keeps the first record
    (pause,) = reader.paused().values()
    assert (pause.queue, pause.by) == ("email", "ops") and pause.at > 0
    assert reader.resume("email") is True and writer.paused() == {}
    assert reader.resume("email") is False


def test_recent_tasks_from_postgres(private_env: dict[str, str], log_dir: Path, postgres_url: str) -> None:
    """The console's task list reads PostgreSQL's result_extended rows as it reads SQLite's."""
    from fleet.ops.tasks import recent

    env = {**private_env, "CELERY_RESULT_BACKEND": postgres_url}
    worker = start_worker("default", env, log_dir)
    try:
        with app_for(env) as app:
            done = app.send_task("tasks.add", (20, 22))
            failed = app.send_task("tasks.validate_data", ({"source_id": 1},))
            assert done.get(timeout=30) == 42
            with pytest.raises(KeyError):
                failed.get(timeout=30)
            rows = {row["task_id"]: row for row in recent(app.backend, queue="default")["items"]}
            assert rows[done.id]["state"] == "SUCCESS" and rows[done.id]["task"] == "tasks.add"
            assert rows[failed.id]["exception"] == {"type": "KeyError", "message": "'records'"}
            assert [row["task_id"] for row in recent(app.backend, state="FAILURE")["items"]] == [failed.id]
    finally:
        worker.stop()
