"""The Redis backend's one-round-trip writes store and publish what Celery's do (fleet.results_redis)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from celery import states
from celery.app.task import Context
from celery.backends.redis import RedisBackend
from redis.exceptions import ResponseError

from fleet.results_redis import OneTripRedisBackend
from fleet.testing.ports import free_port
from fleet.testing.processes import start_worker
from fleet.worker import dedup
from tests.support.apps import app_for
from tests.test_dedup_decisions import delivery
from tests.test_results import redis_url  # noqa: F401 - fixture

REQUEST = Context(
    task="tasks.add", args=[1, 2], kwargs={}, hostname="w@h", retries=0, delivery_info={"routing_key": "default"}
)


def claimant(backend: RedisBackend, task_id: str) -> SimpleNamespace:
    """A fresh first delivery of ``task_id`` about to run in a threaded worker, as duplicate_of reads it."""
    request = delivery(backend, task_id)
    request.task.track_started = True
    request._context = Context(vars(REQUEST), id=task_id)
    request.hostname = request._context.hostname
    return request


def stored(backend: RedisBackend, task_id: str) -> dict:
    meta = json.loads(backend.client.get(backend.get_key_for_task(task_id)))
    return {key: value for key, value in meta.items() if key not in ("task_id", "date_done")}


def test_writes_store_publish_and_keep_success_as_celery_does(private_env: dict[str, str], redis_url: str) -> None:  # noqa: F811
    with app_for({**private_env, "CELERY_RESULT_BACKEND": redis_url}) as app:
        fleet = app.backend
        assert isinstance(fleet, OneTripRedisBackend)
        celery = RedisBackend(app=app, url=redis_url)
        ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
        channel = fleet.client.pubsub(ignore_subscribe_messages=True)
        channel.subscribe(fleet.get_key_for_task(ours))
        for write in (
            lambda b, i: b.store_result(i, {"pid": 1}, states.STARTED, request=REQUEST),
            lambda b, i: b.mark_as_done(i, 3, request=REQUEST),
            lambda b, i: b.mark_as_failure(i, KeyError("late"), request=REQUEST),  # after SUCCESS: left alone
        ):
            write(fleet, ours)
            write(celery, theirs)
            assert stored(fleet, ours) == stored(celery, theirs)
        messages = [channel.get_message(timeout=0.5) for _ in range(4)]  # the first may be the subscribe reply
        heard = [json.loads(message["data"])["status"] for message in messages if message]
        assert heard == ["STARTED", "SUCCESS"]
        assert app.AsyncResult(ours).get(timeout=5) == 3
        assert 0 < fleet.client.ttl(fleet.get_key_for_task(ours)) <= fleet.expires
        failed = str(uuid.uuid4())
        fleet.mark_as_failure(failed, KeyError("records"), traceback="tb", request=REQUEST)
        result = app.AsyncResult(failed)
        assert result.state == "FAILURE" and isinstance(result.result, KeyError) and result.traceback == "tb"
        not_json = str(uuid.uuid4())  # another serializer's value: Celery's path, failing as Celery fails
        fleet.client.set(fleet.get_key_for_task(not_json), b"\x80\x04pickle")
        errors = []
        for backend in (fleet, celery):
            with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever Celery raises, both raise it
                backend.store_result(not_json, 1, states.SUCCESS)
            errors.append(type(caught.value))
        assert errors[0] is errors[1]
        assert fleet.client.get(fleet.get_key_for_task(not_json)) == b"\x80\x04pickle"
        channel.close()


def test_a_worker_on_redis_answers_get(private_env: dict[str, str], log_dir: Path, redis_url: str) -> None:  # noqa: F811
    """``AsyncResult.get()`` waits on the key's channel: the script's PUBLISH must reach it."""
    env = {**private_env, "CELERY_RESULT_BACKEND": redis_url}
    worker = start_worker("default", env, log_dir)
    try:
        with app_for(env) as app:
            results = [app.send_task("tasks.add", (n, 1)) for n in range(5)]
            assert [result.get(timeout=30) for result in results] == [n + 1 for n in range(5)]
    finally:
        worker.stop()


def test_a_server_refusing_scripts_gets_celerys_writes(private_env: dict[str, str], redis_url: str) -> None:  # noqa: F811
    with app_for({**private_env, "CELERY_RESULT_BACKEND": redis_url}) as app:
        fleet = app.backend

        def refused(**_: object) -> None:
            raise ResponseError("NOPERM this user has no permissions to run the 'evalsha' command")

        fleet.__dict__["_store_script"] = refused
        task_id = str(uuid.uuid4())
        fleet.mark_as_done(task_id, 5, request=REQUEST)
        fleet.mark_as_failure(task_id, KeyError("late"), request=REQUEST)
        assert fleet._scripts_refused and app.AsyncResult(task_id).get(timeout=5) == 5


def test_the_result_client_parses_replies_with_hiredis(private_env: dict[str, str], redis_url: str) -> None:  # noqa: F811
    """hiredis is pinned: redis-py's C reply parser halves the client's CPU per result read or write."""
    with app_for({**private_env, "CELERY_RESULT_BACKEND": redis_url}) as app:
        pool = app.backend.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command("PING")
            assert connection.read_response() in (b"PONG", "PONG")
            assert type(connection._parser).__name__ == "_HiredisParser"
        finally:
            pool.release(connection)


def test_a_threaded_worker_reads_for_duplicates_and_stores_started_in_one_call(
    private_env: dict[str, str],
    log_dir: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """Two calls a task, not three: the duplicate check's read is the STARTED write (claim_started),
    which stores what Celery's trace would, and the trace's own STARTED write is skipped."""
    env = {**private_env, "CELERY_RESULT_BACKEND": redis_url}
    worker = start_worker("default", env, log_dir)
    try:
        with app_for(env) as app:
            assert app.send_task("tasks.add", (0, 0)).get(timeout=30) == 0  # consuming, scripts loaded
            task_id = str(uuid.uuid4())
            key = app.backend.get_key_for_task(task_id).decode()
            channel = app.backend.client.pubsub(ignore_subscribe_messages=True)
            channel.subscribe(key)
            calls: list[str] = []
            with redis.Redis.from_url(redis_url, socket_timeout=30).monitor() as monitor:
                app.send_task("tasks.add", (2, 3), task_id=task_id)
                while calls.count("EVALSHA") < 2:
                    seen = monitor.next_command()
                    name, command = seen["command"].split()[0], seen["command"]
                    if seen["client_type"] != "lua" and key in command and name not in ("SUBSCRIBE", "UNSUBSCRIBE"):
                        calls.append(name)  # the client's calls, not those the script makes
            assert calls == ["EVALSHA", "EVALSHA"]
            heard: list[dict] = []
            deadline = time.monotonic() + 30
            while not heard or heard[-1]["status"] != "SUCCESS":
                assert time.monotonic() < deadline, heard
                if message := channel.get_message(timeout=1):
                    heard.append(json.loads(message["data"]))
            channel.close()
    finally:
        worker.stop()
    assert [meta["status"] for meta in heard] == ["STARTED", "SUCCESS"]
    started = heard[0]
    assert started["result"]["hostname"] == started["worker"] and started["worker"]
    assert isinstance(started["result"]["pid"], int)
    expected = {"name": "tasks.add", "args": [2, 3], "kwargs": {}, "retries": 0, "queue": "default"}
    assert {field: started[field] for field in expected} == expected
    assert heard[1]["result"] == 5


def test_two_workers_deciding_on_one_id_at_the_same_moment_let_exactly_one_run(
    private_env: dict[str, str],
    redis_url: str,  # noqa: F811 - fixture
) -> None:
    """The duplicate check's read is the STARTED write: of two checks of one id at once, one claims it.
    With a read, then a write, both would read PENDING and both would run."""

    ids = [str(uuid.uuid4()) for _ in range(100)]
    with app_for({**private_env, "CELERY_RESULT_BACKEND": redis_url}) as app:
        together = threading.Barrier(2)

        def decide(task_id: str) -> str | None:
            request = claimant(app.backend, task_id)
            together.wait(timeout=10)
            return dedup.duplicate_of(request, threaded=True, held=False, claim=True)

        with ThreadPoolExecutor(2) as pool:
            decisions = [sorted(pool.map(decide, [task_id, task_id]), key=str) for task_id in ids]
        assert all(decision == [None, "another delivery is running it"] for decision in decisions), decisions[:5]
        assert {stored(app.backend, task_id)["status"] for task_id in ids} == {"STARTED"}


def test_a_claim_while_redis_is_away_gives_up_at_once_and_the_task_runs(private_env: dict[str, str]) -> None:
    """One try: Celery's retry policy for result writes (about 19 s here) is left to its own STARTED
    write, which follows; going through it here too made a task wait it out twice."""
    with app_for({**private_env, "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{free_port()}/0"}) as app:
        request = claimant(app.backend, str(uuid.uuid4()))
        began = time.monotonic()
        assert dedup.duplicate_of(request, threaded=True, held=False, claim=True) is None
        assert time.monotonic() - began < 5
