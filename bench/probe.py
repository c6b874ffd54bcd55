"""How a benchmark task tells the benchmark it ran: one line appended to a file.

Every framework's no-op task calls :func:`record` and nothing else, so "no-op"
costs the same few microseconds everywhere. A line is ``<tag> <sent_at> <ran_at>``
(wall clock, same machine), which gives completion counts, drain rates and
enqueue-to-start latencies without a result backend or events. Tasks that do
work (bench.work) add a fourth field, the CPU seconds the work took in its thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROBE_ENV = "BENCH_PROBE_FILE"

_fd: int | None = None
_pid = 0


def record(sent_at: float, tag: str = "-", cpu: float | None = None) -> None:
    """Append this task's line (opened once per process, so prefork children each get their own fd)."""
    global _fd, _pid
    if _fd is None or _pid != os.getpid():
        _fd = os.open(os.environ[PROBE_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _pid = os.getpid()
    extra = "" if cpu is None else f" {cpu:.6f}"
    os.write(_fd, f"{tag} {sent_at:.6f} {time.time():.6f}{extra}\n".encode())


@dataclass(frozen=True)
class Run:
    tag: str
    sent_at: float
    ran_at: float
    cpu: float | None = None


class Probe:
    """The reading side: counts lines as they arrive and parses them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")

    def count(self) -> int:
        with self.path.open("rb") as handle:
            return handle.read().count(b"\n")

    def wait(self, total: int, timeout: float, alive: Callable[[], None] | None = None) -> float:
        """Block until ``total`` lines are in; return the wall clock when they were seen.

        ``alive`` raises if the processes doing the work have died, so a crash fails fast.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            if alive:
                alive()
            seen = self.count()
            if seen >= total:
                return time.time()
            time.sleep(0.01)
        raise TimeoutError(f"{seen} of {total} benchmark tasks ran within {timeout:g}s")

    def runs(self, tag: str | None = None) -> list[Run]:
        found = []
        for line in self.path.read_text().splitlines():
            name, sent, ran, *cpu = line.split()
            if tag is None or name == tag:
                found.append(Run(name, float(sent), float(ran), float(cpu[0]) if cpu else None))
        return found

    def reset(self) -> None:
        self.path.write_bytes(b"")
