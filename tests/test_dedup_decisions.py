"""Every row of fleet.worker.dedup's table decides the same through the SQL backend's two-column read
as through Celery's ``get_task_meta``, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from celery.backends.database import DatabaseBackend

from fleet.republish import REPLAY_HEADER
from fleet.worker import dedup
from tests.support.api import PureApi
from tests.test_results import postgres_url  # noqa: F401 - fixture
from tests.test_results_writes import api, backends, failed, retried, started, succeeded  # noqa: F401 - fixtures


def revoked(backend: DatabaseBackend, task_id: str, retries: int = 0) -> None:
    backend.mark_as_revoked(task_id, reason="revoked")


def nothing(backend: DatabaseBackend, task_id: str, retries: int = 0) -> None:
    """PENDING: nothing stored."""


Store = Callable[[DatabaseBackend, str, int], None]

#: (stored: steps with their attempt, delivery: attempt, redelivered, replayed, threaded, held copy) -> decision
TABLE: list[tuple[str, list[tuple[Store, int]], dict[str, Any], str | None]] = [
    ("SUCCESS", [(started, 0), (succeeded, 0)], {}, "it already succeeded"),
    ("SUCCESS, replayed", [(started, 0), (succeeded, 0)], {"replayed": True}, "it already succeeded"),
    ("STARTED, same attempt, fresh", [(started, 1)], {"attempt": 1}, "another delivery is running it"),
    ("STARTED, higher attempt stored", [(started, 2)], {"attempt": 1}, "another delivery is running it"),
    ("held by this worker", [], {"held": True}, "another copy is held by this worker"),
    ("held, but redelivered", [], {"held": True, "redelivered": True}, None),
    ("RETRY", [(started, 0), (retried, 0)], {"attempt": 1}, None),
    ("STARTED, lower attempt", [(started, 0)], {"attempt": 1}, None),
    ("STARTED, redelivered, threaded", [(started, 0)], {"redelivered": True, "threaded": True}, dedup.LOST),
    ("STARTED, redelivered, prefork", [(started, 0)], {"redelivered": True}, None),
    ("STARTED, replayed, threaded", [(started, 0)], {"replayed": True, "threaded": True}, None),
    ("FAILURE", [(started, 0), (failed, 0)], {"replayed": True}, None),
    ("REVOKED", [(revoked, 0)], {}, None),
    ("PENDING", [(nothing, 0)], {}, None),
]


def delivery(backend: Any, task_id: str, attempt: int = 0, redelivered: bool = False, replayed: bool = False) -> Any:
    """What duplicate_of reads of Celery's Request."""
    headers = {"retries": attempt, **({REPLAY_HEADER: "1"} if replayed else {})}
    return SimpleNamespace(
        id=task_id,
        ignore_result=False,
        task=SimpleNamespace(ignore_result=False, backend=backend),
        request_dict=headers,
        delivery_info={"redelivered": redelivered},
    )


@pytest.mark.parametrize("case", TABLE, ids=[row[0] for row in TABLE])
def test_each_row_decides_as_before(api: PureApi, case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _, stored, how, expected = case
    fleet, celery = backends(api)
    task_id = str(uuid.uuid4())
    for step, attempt in stored:
        step(fleet, task_id, attempt)
    how = dict(how)
    threaded, held = how.pop("threaded", False), how.pop("held", False)
    decisions = []
    for backend in (fleet, celery):  # the two-column read, then Celery's get_task_meta
        request = delivery(backend, task_id, **how)
        copy = delivery(backend, task_id, **{**how, "redelivered": False, "replayed": False})
        monkeypatch.setattr(dedup, "held_requests", lambda held_now=[request, copy] if held else [request]: held_now)
        decisions.append(dedup.duplicate_of(request, threaded=threaded))
    assert decisions == [expected, expected]


def test_a_store_that_does_not_answer_runs_the_task(api: PureApi) -> None:  # noqa: F811
    fleet, _ = backends(api)
    fleet.url = "sqlite:////nonexistent/dir/results.sqlite"
    fleet.max_retries = 0
    assert dedup.duplicate_of(delivery(fleet, str(uuid.uuid4()))) is None


def test_ignore_result_tasks_are_not_read(api: PureApi) -> None:  # noqa: F811
    fleet, _ = backends(api)
    task_id = str(uuid.uuid4())
    succeeded(fleet, task_id)
    request = delivery(fleet, task_id)
    request.ignore_result = True
    assert dedup.duplicate_of(request) is None
