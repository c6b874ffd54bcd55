"""The idempotency stores on real backends: SQLite (the default results DB) and a private redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from fleet.api.idempotency import IdempotencyStore, RedisStore, SQLStore, fingerprint, open_store, task_ids
from fleet.settings import load_settings
from fleet.testing.ports import free_port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(10)


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.pure), "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201 - a factory
    def make(retention: float = 60, lease: float = 30) -> IdempotencyStore:
        if request.param == "sqlite":
            return SQLStore(f"sqlite:///{tmp_path / 'results.sqlite'}", retention, lease)
        return RedisStore(request.getfixturevalue("redis_url"), retention, lease)

    return make


def test_first_reserves_second_sees_pending_then_the_answer(make_store) -> None:  # noqa: ANN001
    store = make_store()
    key, print_ = f"k-{time.time_ns()}", fingerprint("POST", "/api/send-email", b"{}")
    assert store.reserve(key, print_) is None
    pending = store.reserve(key, print_)
    assert pending is not None and not pending.done and pending.fingerprint == print_
    store.complete(key, print_, 202, {"task_id": "abc"})
    done = store.reserve(key, print_)
    assert done is not None and done.done and done.status == 202 and done.body == {"task_id": "abc"}


def test_release_lets_a_retry_go_ahead(make_store) -> None:  # noqa: ANN001
    store = make_store()
    key = f"k-{time.time_ns()}"
    assert store.reserve(key, "f") is None
    store.release(key)
    assert store.reserve(key, "f") is None


def test_an_expired_lease_or_record_can_be_taken_again(make_store) -> None:  # noqa: ANN001
    store = make_store(retention=0.3, lease=0.3)
    key = f"k-{time.time_ns()}"
    assert store.reserve(key, "f") is None  # the API died before completing
    time.sleep(0.5)
    assert store.reserve(key, "f") is None
    store.complete(key, "f", 202, {"task_id": "x"})
    time.sleep(0.5)
    assert store.reserve(key, "f") is None  # past the retention window it is a new request


def test_concurrent_reservations_have_exactly_one_winner(make_store) -> None:  # noqa: ANN001
    store = make_store()
    key = f"k-{time.time_ns()}"
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: store.reserve(key, "f"), range(16)))
    assert sum(outcome is None for outcome in outcomes) == 1


@pytest.mark.pure
def test_the_store_follows_the_result_backend(tmp_path: Path) -> None:
    default = open_store(load_settings({"FLEET_VAR_DIR": str(tmp_path)}))
    assert isinstance(default, SQLStore) and default.url == f"sqlite:///{tmp_path / 'results.sqlite'}"
    on_redis = open_store(load_settings({"FLEET_VAR_DIR": str(tmp_path), "CELERY_RESULT_BACKEND": "redis://h:1/0"}))
    assert isinstance(on_redis, RedisStore)


def test_a_keyed_request_has_the_same_task_ids_on_every_attempt() -> None:
    def first(key: str, body: bytes, n: int = 3) -> list[str]:
        ids = task_ids(key, fingerprint("POST", "/api/tasks/batch", body))
        return [next(ids) for _ in range(n)]

    assert first("k1", b"{}") == first("k1", b"{}")  # a retry republishes the same ids
    assert len(set(first("k1", b"{}"))) == 3  # distinct within a request
    assert not set(first("k1", b"{}")) & set(first("k2", b"{}"))
    assert not set(first("k1", b"{}")) & set(first("k1", b'{"a": 1}'))
