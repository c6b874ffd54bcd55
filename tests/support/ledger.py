"""A loss ledger outside the broker: which accepted tasks completed, and how often."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import redis

REDIS_URL = "redis://127.0.0.1:6379/14"


@dataclass
class Tally:
    lost: set[str]
    duplicated: dict[str, int]
    unexpected: set[str]
    #: seconds of the longest wait in :meth:`Ledger.wait_for` with tasks left and none completing
    longest_stall: float = 0.0

    def __str__(self) -> str:
        return (
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} unexpected={len(self.unexpected)} "
            f"longest_stall={self.longest_stall:.1f}s"
        )


class Ledger:
    """Tasks call :meth:`record` when they complete; a test compares with what was accepted."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key or f"fleet-ledger:{uuid.uuid4().hex}"
        self.redis = redis.Redis.from_url(REDIS_URL)

    def record(self, task_id: str) -> None:
        self.redis.hincrby(self.key, task_id, 1)

    def completions(self) -> dict[str, int]:
        return {key.decode(): int(value) for key, value in self.redis.hgetall(self.key).items()}

    def tally(self, accepted: Iterable[str]) -> Tally:
        accepted = set(accepted)
        done = self.completions()
        return Tally(
            lost=accepted - set(done),
            duplicated={task_id: n for task_id, n in done.items() if n > 1},
            unexpected=set(done) - accepted,
        )

    def wait_for(self, accepted: Iterable[str], timeout: float) -> Tally:
        """Wait until every accepted task completed (or time ran out); return the tally, with the
        longest time no task completed: a worker that stalls and then recovers still shows."""
        accepted = set(accepted)
        now = time.monotonic()
        deadline, progress_at, done, longest_stall = now + timeout, now, -1, 0.0
        while True:
            completed = set(self.completions())
            now = time.monotonic()
            if len(completed) != done:
                done, progress_at = len(completed), now
            longest_stall = max(longest_stall, now - progress_at)
            if now >= deadline or accepted <= completed:
                break
            time.sleep(0.25)
        tally = self.tally(accepted)
        tally.longest_stall = longest_stall
        return tally

    def drop(self) -> None:
        self.redis.delete(self.key)
