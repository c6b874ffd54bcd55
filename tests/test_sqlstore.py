"""fleet's tables beside the results are created by whichever process comes first: every gunicorn
worker starts at once, and one of them used to lose the create race and answer 500."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from fleet.api.idempotency import SQLStore
from fleet.ops.pause import SQLPauses

pytestmark = pytest.mark.pure
PROCESSES = 8


def _first_use(url: str, start: multiprocessing.synchronize.Barrier, index: int) -> None:
    start.wait(30)  # every process opens its stores at the same moment, as gunicorn's workers do
    assert SQLStore(url, retention=60, lease=5).reserve(f"key-{index}", "print") is None
    SQLPauses(url).pause(f"queue-{index}", by="test")


def test_processes_starting_together_all_create_or_find_the_tables(tmp_path: Path) -> None:
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
