"""The arithmetic behind the newer figures: drain windows, efficiency, a median's confidence interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def window_rates(finished: Sequence[float], skip: int, size: int) -> list[float]:
    """Tasks/s of consecutive windows of ``size`` completions, after the first ``skip`` (the warm-up).

    ``finished`` are completion times. Window ``i`` runs from the completion that
    ends the previous window (the last warm-up one for the first) to its own last,
    so no gap between windows is counted twice or lost.
    """
    if skip < 1 or size < 1:
        raise ValueError("skip and size must be at least 1")
    times = sorted(finished)
    rates = []
    start = skip - 1
    while start + size < len(times):
        elapsed = times[start + size] - times[start]
        rates.append(size / elapsed if elapsed > 0 else math.inf)
        start += size
    return rates


def efficiency(tasks_per_s: float, slots: float, task_seconds: float) -> float:
    """Measured rate over the ideal ``slots / task_seconds`` (cores for CPU work, concurrency for waits)."""
    if slots <= 0 or task_seconds <= 0:
        raise ValueError("slots and task_seconds must be above 0")
    return tasks_per_s / (slots / task_seconds)


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: the order statistics ``j`` and ``n - 1 - j``.

    ``j`` is the largest index whose interval misses the median with a chance of at most
    ``1 - confidence`` (two binomial(n, 1/2) tails). With few values (n < 6 at 95%) it is the
    whole range, which then covers less than ``confidence``.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return (math.nan, math.nan)
    j = 0
    while j + 1 <= n - 2 - j and _miss(j + 1, n) <= 1 - confidence:
        j += 1
    return (ordered[j], ordered[n - 1 - j])


def _miss(j: int, n: int) -> float:
    """The chance that the median lies outside [x_j, x_(n-1-j)] (0-based order statistics):
    at most ``j`` of ``n`` values fall below it, or at most ``j`` above."""
    return 2 * sum(math.comb(n, i) for i in range(j + 1)) / 2**n


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q1, q3)
