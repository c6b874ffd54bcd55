"""What the CPU-bound and I/O-bound benchmark tasks do, the same in every framework.

``spin`` is pure-Python work (the GIL held throughout, as in most real Python
code); the bench calibrates its iteration count once so a task takes about
5 ms, and each task measures the CPU its own thread spent, so the ideal rate is
computed from what the tasks really cost where they ran.
"""

from __future__ import annotations

import time


def spin(iterations: int) -> int:
    """Pure-Python arithmetic, ``iterations`` rounds of it."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total


def timed_spin(iterations: int) -> float:
    """CPU seconds of this thread that ``spin(iterations)`` took."""
    start = time.thread_time()
    spin(iterations)
    return time.thread_time() - start


def calibrate(seconds: float, trials: int = 7) -> int:
    """Iterations of :func:`spin` that take about ``seconds`` of CPU here (median of ``trials``)."""
    probe = 100_000
    costs = sorted(timed_spin(probe) for _ in range(trials))
    return max(1, round(probe * seconds / costs[len(costs) // 2]))
