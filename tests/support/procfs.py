"""Reading processes from /proc in tests: niceness per thread and process trees."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def _fields(stat_path: Path) -> list[str]:
    """A stat line's fields from field 3 on (split after comm's last ')', which may hold spaces)."""
    return stat_path.read_text().rpartition(") ")[2].split()


def thread_nices(pid: int) -> dict[int, int]:
    """Every thread of ``pid`` -> its niceness (field 19; Linux niceness is per thread)."""
    return {int(task.name): int(_fields(task / "stat")[16]) for task in (PROC / str(pid) / "task").iterdir()}


def autogroup_nice(pid: int) -> int | None:
    """The niceness of ``pid``'s autogroup, None without autogroups."""
    path = PROC / str(pid) / "autogroup"
    return int(path.read_text().split()[-1]) if path.exists() else None


def tree(root: int) -> list[int]:
    """``root`` and every process below it, from the ppid field of /proc/<pid>/stat."""
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_fields(entry / "stat")[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found
