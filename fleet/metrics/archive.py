"""Keeping a worker's multiprocess metric files few and its counters monotonic.

prometheus-client writes one file per process and metric type and never
removes the counter and histogram files of a process that exited. Under
``max_tasks_per_child`` churn that is thousands of files, every scrape reading
all of them. Here the files of an exited process are merged into one archive
file per type (``counter_archive.db``...), so the directory holds the live
processes' files plus the archives, and what dead children counted is kept.

Merging and scraping exclude each other: a POSIX lock on ``.lock`` (per
process, not inherited across fork) plus a thread lock inside the process.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ARCHIVE = "archive"
CUMULATIVE_TYPES = ("counter", "histogram", "summary")
_FILE = re.compile(r"^(?P<prefix>counter|histogram|summary|gauge_[a-z]+)_(?P<pid>\d+)\.db$")

_thread_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _thread_lock
    _thread_lock = threading.Lock()  # a lock held by another thread at fork would never be released


os.register_at_fork(after_in_child=_reset_after_fork)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Exclusive use of ``directory`` against merges and scrapes in any process."""
    with _thread_lock, open(directory / ".lock", "a+b") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def process_files(directory: Path) -> dict[int, list[Path]]:
    """pid -> that process's metric files (archives excluded)."""
    found: dict[int, list[Path]] = defaultdict(list)
    for path in directory.glob("*.db"):
        match = _FILE.match(path.name)
        if match:
            found[int(match["pid"])].append(path)
    return dict(found)


def _merge_into_archive(directory: Path, kind: str, source: Path) -> None:
    archive = directory / f"{kind}_{ARCHIVE}.db"
    totals: dict[str, float] = defaultdict(float)
    for path in (archive, source):
        if path.exists():
            for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
                totals[key] += value
    staging = directory / f"{kind}_{ARCHIVE}.staging"  # not *.db: scrapes never read it
    staging.unlink(missing_ok=True)
    merged = MmapedDict(str(staging))
    try:
        for key, value in totals.items():
            merged.write_value(key, value, 0.0)
    finally:
        merged.close()
    os.replace(staging, archive)
    source.unlink()


def retire(directory: Path, pid: int) -> bool:
    """Fold the files of exited process ``pid`` into the archives; True if it had any.

    Cumulative types (counters, histograms) are added to the archive so totals
    never go backwards; gauges describe live processes only and are dropped.
    Call only for a pid that has exited (or is exiting and writes no more).
    """
    with locked(directory):
        files = process_files(directory).get(pid, [])
        for path in files:
            kind = _FILE.match(path.name)["prefix"]  # type: ignore[index]
            if kind in CUMULATIVE_TYPES:
                _merge_into_archive(directory, kind, path)
            else:
                path.unlink(missing_ok=True)
        mark_process_dead(pid, str(directory))
        return bool(files)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(directory: Path, keep: set[int]) -> list[int]:
    """Retire the files of every process that is gone (killed children included).

    ``keep``: pids never to retire (this process). A pid is retired only once
    no process has it; pids are handed out in sequence, so the new process that
    could reuse it is far in the future.
    """
    dead = [pid for pid in process_files(directory) if pid not in keep and not _alive(pid)]
    return [pid for pid in dead if retire(directory, pid)]


class ArchivingMultiProcessCollector(MultiProcessCollector):
    """prometheus-client's collector, reading while no archive merge runs."""

    def __init__(self, directory: Path) -> None:
        super().__init__(None, str(directory))
        self.directory = directory

    def collect(self) -> Any:
        with locked(self.directory):
            return super().collect()


def file_count(directory: Path) -> int:
    return sum(1 for _ in directory.glob("*.db"))
