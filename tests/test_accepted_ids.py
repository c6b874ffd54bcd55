"""The accepted-id record's write-behind: fresh ids written just after the 202, read back without a gap.

The stores themselves (SQLite, Redis, PostgreSQL) are tested in test_results.py;
here a store that remembers its calls stands in (pure logic), except for the
exit test, which leaves a real process and a real SQLite file behind.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

from fleet.api import accepted
from fleet.api.accepted import WriteBehind, open_accepted
from fleet.messages import issued_at, new_task_id
from fleet.settings import load_settings

WRITER = "fleet-accepted-ids"


class Store:
    """An accepted-id store in memory that remembers each write; ``gate`` holds the writer thread's writes."""

    def __init__(self, failures: int = 0) -> None:
        self.ids: set[str] = set()
        self.writes: list[list[str]] = []
        self.asked = 0
        self.failures = failures
        self.gate = threading.Event()
        self.gate.set()

    def record(self, task_ids: Iterable[str]) -> None:
        if threading.current_thread().name == WRITER:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise OSError("the database is locked")
        batch = list(task_ids)
        self.writes.append(batch)
        self.ids.update(batch)

    def known(self, task_id: str) -> bool:
        self.asked += 1
        return task_id in self.ids


@pytest.mark.pure
def test_issued_at_reads_a_v7_ids_millisecond_and_nothing_else() -> None:
    before = time.time()
    stamp = issued_at(new_task_id())
    assert stamp is not None and before - 0.001 <= stamp <= time.time()
    assert issued_at(str(uuid.uuid4())) is None
    assert issued_at(str(uuid.uuid5(uuid.NAMESPACE_URL, "key"))) is None
    assert issued_at("not-a-task-id") is None
    assert issued_at("zzzzzzzz-zzzz-7zzz-8zzz-zzzzzzzzzzzz") is None  # shaped like one, not hex


@pytest.mark.pure
def test_the_requests_in_flight_share_one_write() -> None:
    store = Store()
    behind = WriteBehind(store, linger=0.05)
    ids = [new_task_id() for _ in range(40)]
    start = threading.Barrier(len(ids))

    def request(task_id: str) -> None:
        start.wait()
        behind.record([task_id])

    threads = [threading.Thread(target=request, args=(task_id,)) for task_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert behind.flush(10)
    assert store.ids == set(ids)
    assert len(store.writes) < len(ids) / 4  # not a write per request


@pytest.mark.pure
def test_ids_that_carry_no_time_are_written_before_record_returns() -> None:
    store = Store()
    store.gate.clear()  # the writer thread writes nothing yet
    behind = WriteBehind(store)
    keyed, canvas, fresh = str(uuid.uuid5(uuid.NAMESPACE_URL, "key")), str(uuid.uuid4()), new_task_id()
    behind.record([keyed, fresh, canvas])
    assert store.ids == {keyed, canvas}  # a reader could not tell these are fresh: written at once
    store.gate.set()
    assert behind.flush(10)
    assert store.ids == {keyed, canvas, fresh}


@pytest.mark.pure
def test_a_failed_write_is_logged_and_later_ids_are_written(caplog: pytest.LogCaptureFixture) -> None:
    store = Store(failures=1)
    behind = WriteBehind(store, linger=0)
    lost = new_task_id()
    with caplog.at_level(logging.WARNING, logger="fleet.api"):
        behind.record([lost])
        assert behind.flush(10)
    assert "could not record 1 accepted task ids" in caplog.text
    later = new_task_id()
    behind.record([later])
    assert behind.flush(10)
    assert store.ids == {later}


@pytest.mark.pure
def test_a_writer_far_behind_makes_requests_write_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accepted, "MAX_PENDING", 3)
    store = Store()
    store.gate.clear()  # the writer is stuck in its first write (a locked database)
    behind = WriteBehind(store, linger=0)
    first = new_task_id()
    behind.record([first])
    deadline = time.monotonic() + 10
    while behind._pending and time.monotonic() < deadline:  # the writer took it and is stuck on the gate
        time.sleep(0.001)
    backlog = [new_task_id() for _ in range(3)]
    behind.record(backlog)  # waits with the writer: the backlog is full now
    overflow = new_task_id()
    behind.record([overflow])
    assert store.ids == {overflow}  # written by the request itself, nothing else yet
    store.gate.set()
    assert behind.flush(10)
    assert store.ids == {first, overflow, *backlog}


@pytest.mark.pure
def test_a_reader_waits_for_a_fresh_id_and_not_for_others() -> None:
    store = Store()
    behind = WriteBehind(store)
    fresh = new_task_id()
    late = threading.Timer(0.1, store.record, args=([fresh],))  # another process's writer, a little behind
    late.start()
    assert behind.known(fresh)
    late.join()
    # Ids no write can be pending for are answered from one look: no time in them, or made long ago.
    hour_ago = (int(time.time() * 1000) - 3_600_000) << 80 | 0x7 << 76 | 0x2 << 62
    for stale in (str(uuid.uuid4()), str(uuid.UUID(int=hour_ago))):
        store.asked = 0
        assert not behind.known(stale)
        assert store.asked == 1


def test_a_process_leaving_writes_what_it_answered_first(tmp_path: Path) -> None:
    """A gunicorn worker stopping right after its 202s: its writer's ids reach the database before it exits."""
    env = {"FLEET_VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": "amqp://guest@127.0.0.1:1//"}
    script = (
        "from fleet.api.accepted import open_accepted\n"
        "from fleet.messages import new_task_id\n"
        "from fleet.settings import load_settings\n"
        "ids = [new_task_id() for _ in range(50)]\n"
        "open_accepted(load_settings()).record(ids)\n"
        "print(' '.join(ids))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 50
    store = open_accepted(load_settings(env))
    assert isinstance(store, WriteBehind)
    assert all(store.store.known(task_id) for task_id in ids)  # the table itself: no waiting on the reader's side
