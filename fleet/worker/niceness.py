"""A worker's scheduling niceness, from its pool spec (``PoolSpec.nice``), set by the worker itself.

Set in ``fleet worker`` before any thread or child exists, so every thread and prefork child
inherits it, and so supervisor, Kubernetes, ``make run`` and the benchmarks all get it from the one
spec without a ``nice -n`` in each launcher. Linux niceness is per thread: a value set later would
hold only for the thread that set it.

Two places hold a niceness. The process's own (``setpriority``) orders it against the processes of
its session, which is what supervisord gives: every program shares supervisord's session. A process
that leads its own session (``setsid``, a container's init, the benchmarks' ``start_new_session``)
is its own *autogroup* when ``kernel.sched_autogroup_enabled`` is on, and the scheduler first shares
the CPU between autogroups, ignoring the niceness of their members; there the autogroup's niceness
(``/proc/self/autogroup``) is the one that counts, so it is set as well. Both only ever go up:
lowering needs root, and a worker started under ``nice -n 5`` keeps its 5.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")
#: the kernel lets unprivileged writers change an autogroup's niceness once per 100 ms, machine-wide
_AUTOGROUP_TRIES = 30
_AUTOGROUP_RETRY_S = 0.1


def apply(nice: int) -> int:
    """Raise this process's niceness (and its autogroup's, if it leads its session) to ``nice``; the result."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    if os.getsid(0) == os.getpid():
        _raise_autogroup(nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


def autogroup_nice() -> int | None:
    """This process's autogroup niceness (``/autogroup-42 nice 10``), None without autogroups."""
    try:
        return int(AUTOGROUP.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _raise_autogroup(nice: int) -> None:
    current = autogroup_nice()
    if current is None or nice <= current:
        return
    for _ in range(_AUTOGROUP_TRIES):
        try:
            AUTOGROUP.write_text(str(nice))
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                return  # not permitted here (a hardened /proc): the process niceness still holds
            time.sleep(_AUTOGROUP_RETRY_S)
