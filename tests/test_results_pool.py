"""The database result backend keeps one engine per process (fleet.results)."""

from __future__ import annotations

import os
import uuid

import pytest

from fleet.results import PooledDatabaseBackend
from tests.support.apps import app_for
from tests.test_results import postgres_url  # noqa: F401 - fixture


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_one_engine_per_process(backend: str, private_env: dict[str, str], request) -> None:
    env = dict(private_env)
    if backend != "sqlite":
        env["CELERY_RESULT_BACKEND"] = request.getfixturevalue(f"{backend}_url")
    with app_for(env) as app:
        store = app.backend
        assert isinstance(store, PooledDatabaseBackend)
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for task_id in ids:
            store.store_result(task_id, {"n": 1}, "SUCCESS")
        engine = store.session_manager.get_engine(store.url)
        assert store.session_manager.get_engine(store.url) is engine
        assert [store.get_task_meta(task_id)["status"] for task_id in ids] == ["SUCCESS"] * 3
        pid = os.fork()
        if pid == 0:  # a forked child gets its own engine and still writes and reads
            code = 1
            try:
                child_engine = store.session_manager.get_engine(store.url)
                store.store_result(ids[0] + "-child", 7, "SUCCESS")
                ok = child_engine is not engine and store.get_task_meta(ids[0] + "-child")["result"] == 7
                code = 0 if ok else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get_task_meta(ids[0] + "-child")["status"] == "SUCCESS"
