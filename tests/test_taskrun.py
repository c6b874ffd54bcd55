"""The run hooks (fleet.worker.taskrun): each sees every run once, with its request, and one
hook's bug stops no other; nothing of fleet listens to ``task_success`` any more."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, signals

from fleet.worker import tasklog, taskrun

pytestmark = pytest.mark.pure


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("taskrun-test", broker="memory://", set_as_current=False)
    yield app
    for name in ("test.broken", "test.recorder"):
        taskrun.unregister(name)


def test_each_hook_sees_each_run_once_and_a_failing_hook_stops_no_other(app: Celery) -> None:
    @app.task(name="test.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="test.fail")
    def fail() -> None:
        raise ValueError("no")

    seen: list[tuple[Any, ...]] = []

    def broken(*_: Any) -> None:
        raise RuntimeError("a hook with a bug")

    taskrun.register("test.broken", started=broken, ended=broken)
    taskrun.register(
        "test.recorder",
        started=lambda task, request, task_id: seen.append(("started", task.name, task_id, request.id)),
        ended=lambda task, request, task_id, state: seen.append(("ended", task.name, task_id, request.id, state)),
    )
    assert add.apply((2, 3), task_id="one").get() == 5
    assert fail.apply(task_id="two").state == "FAILURE"
    assert seen == [
        ("started", "test.add", "one", "one"),
        ("ended", "test.add", "one", "one", "SUCCESS"),
        ("started", "test.fail", "two", "two"),
        ("ended", "test.fail", "two", "two", "FAILURE"),
    ]


def test_registering_a_name_again_replaces_its_hooks(app: Celery) -> None:
    @app.task(name="test.noop")
    def noop() -> None:
        return None

    calls: list[str] = []
    taskrun.register("test.recorder", started=lambda *_: calls.append("first"))
    taskrun.register("test.recorder", started=lambda *_: calls.append("second"))
    noop.apply()
    assert calls == ["second"]
    taskrun.unregister("test.recorder")
    noop.apply()
    assert calls == ["second"]


def test_the_success_line_comes_from_the_run_end_and_nothing_of_fleet_listens_to_task_success(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    tasklog.connect()

    @app.task(name="test.noop")
    def noop() -> None:
        return None

    with caplog.at_level("INFO", logger="fleet.tasks"):
        noop.apply(task_id="three")
    assert [r.getMessage() for r in caplog.records if r.name == "fleet.tasks"] == [
        "task succeeded: name=test.noop id=three queue=?"
    ]
    assert not [key for key, _ in signals.task_success.receivers if "fleet" in str(key)]
