"""fleet's one-statement result writes store what Celery's ORM path stores (fleet.results).

Each sequence of states is written twice into the same database: through
fleet's backend and through Celery's own ``DatabaseBackend``. The rows must
match column for column (``date_done``: set or not, the time itself differs),
and Celery's ``AsyncResult`` and fleet's task-status API must read the two the
same, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import states
from celery.app.task import Context
from celery.backends.database import DatabaseBackend
from celery.exceptions import Retry
from sqlalchemy import select

from fleet.results import PooledDatabaseBackend
from tests.support.api import PureApi, pure_api
from tests.test_results import postgres_url  # noqa: F401 - fixture

TOKEN = "results-writes-token"


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[PureApi]:
    """The API in process on a result database of this test's own (no broker needed)."""
    env = {}
    if request.param == "postgres":
        env["CELERY_RESULT_BACKEND"] = request.getfixturevalue("postgres_url")
    api = pure_api(tmp_path / "var", TOKEN, **env)
    yield api
    api.client.application.extensions["fleet.api"].celery.close()


def backends(api: PureApi) -> tuple[PooledDatabaseBackend, DatabaseBackend]:
    """fleet's backend (the API's) and Celery's own on the same database."""
    celery = api.client.application.extensions["fleet.api"].celery
    fleet = celery.backend
    assert isinstance(fleet, PooledDatabaseBackend)
    return fleet, DatabaseBackend(app=celery, url=fleet.url)


def request_for(retries: int = 0, **extra: Any) -> Context:
    return Context(
        task="tasks.add",
        args=[20, 22],
        kwargs={"twice": True},
        hostname="worker@host",
        retries=retries,
        delivery_info={"routing_key": "default"},
        **extra,
    )


def row(backend: DatabaseBackend, task_id: str) -> dict[str, Any]:
    """The stored row, ``date_done`` as set or not, without the ids."""
    table = backend.task_cls.__table__
    with backend.session_manager.get_engine(backend.url, **backend.engine_options).connect() as connection:
        found = connection.execute(select(table).where(table.c.task_id == task_id)).mappings().one()
    values = {key: value for key, value in found.items() if key not in ("id", "task_id")}
    values["date_done"] = values["date_done"] is not None
    return values


def started(backend: DatabaseBackend, task_id: str, retries: int = 0) -> None:
    backend.store_result(task_id, {"pid": 7, "hostname": "worker@host"}, states.STARTED, request=request_for(retries))


def retried(backend: DatabaseBackend, task_id: str, retries: int = 0) -> None:
    backend.mark_as_retry(task_id, Retry("again", when=1), traceback="Traceback: retry", request=request_for(retries))


def succeeded(backend: DatabaseBackend, task_id: str, retries: int = 0) -> None:
    backend.mark_as_done(task_id, {"sum": 42}, request=request_for(retries))


def failed(backend: DatabaseBackend, task_id: str, retries: int = 0) -> None:
    backend.mark_as_failure(task_id, KeyError("records"), traceback="Traceback: KeyError", request=request_for(retries))


Step = Callable[[DatabaseBackend, str], None]

SEQUENCES: dict[str, list[tuple[Step, int]]] = {
    "started, success": [(started, 0), (succeeded, 0)],
    "started, retry, started, success": [(started, 0), (retried, 0), (started, 1), (succeeded, 1)],
    "started, failure": [(started, 0), (failed, 0)],
    "started twice (date_done stamped)": [(started, 0), (started, 0)],
    "success, then a late failure (ignored)": [(started, 0), (succeeded, 0), (failed, 0)],
    "failure, then a replay's run": [(started, 0), (failed, 0), (started, 0), (succeeded, 0)],
}


def status(api: PureApi, task_id: str) -> dict[str, Any]:
    response = api.get(f"/api/task-status/{task_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    return {key: value for key, value in body.items() if key not in ("task_id", "date_done")} | {
        "dated": body["date_done"] is not None
    }


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_rows_match_celerys_after_every_write(api: PureApi, sequence: str) -> None:
    fleet, celery = backends(api)
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    for step, retries in SEQUENCES[sequence]:
        step(fleet, ours, retries)
        step(celery, theirs, retries)
        assert row(fleet, ours) == row(celery, theirs), step.__name__
        mine, reference = fleet.app.AsyncResult(ours), fleet.app.AsyncResult(theirs)
        for result in (mine, reference):
            result.backend._cache.clear()
        assert (mine.state, mine.traceback) == (reference.state, reference.traceback), step.__name__
        assert repr(mine.result) == repr(reference.result), step.__name__
        assert status(api, ours) == status(api, theirs), step.__name__
        stored = row(fleet, ours)
        assert fleet.stored_state(ours) == (stored["status"], stored["retries"]), step.__name__


def test_final_states_read_as_celery_reads_them(api: PureApi) -> None:
    fleet, _ = backends(api)
    done, broken, waiting = (str(uuid.uuid4()) for _ in range(3))
    for step, retries in ((started, 0), (retried, 0), (started, 1), (succeeded, 1)):
        step(fleet, done, retries)
    started(fleet, broken)
    failed(fleet, broken)
    started(fleet, waiting)
    result = fleet.app.AsyncResult(done)
    assert (result.state, result.result, result.traceback) == ("SUCCESS", {"sum": 42}, None)
    assert result.name == "tasks.add" and result.args == [20, 22] and result.kwargs == {"twice": True}
    assert result.worker == "worker@host" and result.retries == 1 and result.queue == "default"
    failure = fleet.app.AsyncResult(broken)
    assert failure.state == "FAILURE" and isinstance(failure.result, KeyError)
    assert failure.traceback == "Traceback: KeyError"
    body = status(api, broken)
    assert body["state"] == "FAILURE" and body["exception"] == {"type": "KeyError", "message": "'records'"}
    assert status(api, done)["result"] == {"sum": 42} and status(api, done)["retries"] == 1
    running = status(api, waiting)
    assert running["state"] == "STARTED" and running["status"] == "running" and not running["dated"]
    assert fleet.stored_state(str(uuid.uuid4())) == ("PENDING", None)


def test_stamps_are_kept_by_a_write_without_them(api: PureApi) -> None:
    fleet, celery = backends(api)
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    stamped = request_for(stamped_headers=["tenant"], stamps={"tenant": "blue"})
    for backend, task_id in ((fleet, ours), (celery, theirs)):
        backend.store_result(task_id, None, states.STARTED, request=stamped)
        succeeded(backend, task_id)
    assert row(fleet, ours) == row(celery, theirs)
    assert row(fleet, ours)["stamps"] is not None
