"""fleet's tables beside the results are created by whichever process comes first: every gunicorn
worker starts at once, and one of them used to lose the create race and answer 500."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import MetaData

from fleet.api.idempotency import SQLStore
from fleet.celery_app import prepare_var_dir
from fleet.ops.pause import SQLPauses
from fleet.settings import load_settings

pytestmark = pytest.mark.pure
PROCESSES = 8


def _first_use(url: str, start: multiprocessing.synchronize.Barrier, index: int) -> None:
    start.wait(30)  # every process opens its stores at the same moment, as gunicorn's workers do
    var_dir = Path(url.removeprefix("sqlite:///")).parent
    prepare_var_dir(load_settings({"FLEET_VAR_DIR": str(var_dir)}))  # each switches the file to WAL
    assert SQLStore(url, retention=60, lease=5).reserve(f"key-{index}", "print") is None
    SQLPauses(url).pause(f"queue-{index}", by="test")


def test_processes_starting_together_all_create_or_find_the_tables(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    url = f"sqlite:///{tmp_path / 'var' / 'results.sqlite'}"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    processes = [context.Process(target=_first_use, args=(url, start, i)) for i in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    assert sorted(SQLPauses(url).paused()) == sorted(f"queue-{i}" for i in range(PROCESSES))


def test_fleet_sqlite_connections_commit_without_an_fsync_in_wal_mode(tmp_path: Path) -> None:
    """The results file is in WAL mode with synchronous=NORMAL (1) on every connection: fleet's
    own tables and Celery's result backend alike (an fsync per commit capped result-storing tasks)."""
    from sqlalchemy import text

    from fleet.celery_app import create_celery
    from fleet.settings import load_settings
    from fleet.sqlstore import ProcessEngine

    settings = load_settings({"FLEET_VAR_DIR": str(tmp_path / "var")})
    app = create_celery(settings)
    session = app.backend.ResultSession()
    try:
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        session.close()
    with ProcessEngine(settings.results_url.removeprefix("db+"), MetaData())().connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1
