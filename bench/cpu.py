"""CPU a worker spends, read from /proc: every process of its tree, pool children included.

A process's own time is its CPU clock (``clock_gettime`` on the process's clock id:
nanoseconds, every thread it ever ran included), or ``utime + stime`` of
/proc/<pid>/stat if the clock cannot be read. Those are whole clock ticks (10 ms): a
round of 1,000 no-ops is about 57 ticks, so one tick either way at each end moved a
round's on/off ratio by several percent, more than the 5% metrics_overhead has to
resolve. The time of the children a process has reaped (a recycled prefork child) is
in its ``cutime + cstime``. So the tree's total, live processes plus everything they
reaped, only grows while the tree runs, and the difference of two readings is the CPU
spent in between, whatever execution model (prefork, threads, processes x threads) the
worker uses. A child reaped by no process of the tree (reparented to init) is lost;
workers do not do that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    """What the bench needs of one /proc/<pid>/stat line (times in clock ticks)."""

    pid: int
    ppid: int
    own_ticks: int  # utime + stime
    reaped_ticks: int  # cutime + cstime: children it waited for


def parse_stat(line: str) -> Stat:
    """Parse /proc/<pid>/stat; ``comm`` (field 2) may hold spaces and parentheses, so split after its last ')'."""
    pid, _, rest = line.partition(" (")
    fields = rest.rpartition(") ")[2].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17
    return Stat(int(pid), int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))


def read_all(proc: Path = PROC) -> dict[int, Stat]:
    """Every process's stat (those that exit while reading are skipped)."""
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue
            stats[stat.pid] = stat
    return stats


def tree(stats: dict[int, Stat], roots: Iterable[int]) -> set[int]:
    """The pids of ``roots`` and all their descendants."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in stats]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack += children.get(pid, [])
    return seen


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of every thread that process ``pid`` ever ran, to the nanosecond; None if it is gone.

    The clock id of a process is ``~pid << 3 | 2`` (CPUCLOCK_SCHED), what glibc's
    ``clock_getcpuclockid`` returns; Python exposes the call but not that function.
    """
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        return None


def tree_seconds(
    stats: dict[int, Stat], roots: Iterable[int], clock: Callable[[int], float | None] = process_cpu_seconds
) -> float:
    """CPU seconds of ``roots`` and all their descendants, reaped children included: each process's
    own time from ``clock``, or its ticks where the clock has none."""
    total = 0.0
    for pid in tree(stats, roots):
        own = clock(pid)
        total += stats[pid].own_ticks / TICKS_PER_S if own is None else own
        total += stats[pid].reaped_ticks / TICKS_PER_S
    return total


def cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds the process trees under ``roots`` have used so far."""
    return tree_seconds(read_all(), roots)


@dataclass
class CpuReading:
    """CPU seconds the trees used between entering and leaving :func:`measure`."""

    seconds: float = 0.0

    def per_task_us(self, tasks: int) -> float | None:
        return round(self.seconds / tasks * 1e6, 1) if tasks and self.seconds > 0 else None


@contextmanager
def measure(roots: Iterable[int]) -> Iterator[CpuReading]:
    roots = list(roots)
    reading = CpuReading()
    before = cpu_seconds(roots)
    yield reading
    reading.seconds = cpu_seconds(roots) - before
