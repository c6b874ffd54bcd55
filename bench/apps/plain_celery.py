"""A plain Celery app with Celery's defaults: what `celery_defaults` measures.

Prefork with one child per core, prefetch multiplier 4, early acks, no
publisher confirms. Only the broker URL is set, and, for the `results`
scenario, a result backend (BENCH_RESULT_BACKEND; no backend without it).
"""

from __future__ import annotations

import os

from celery import Celery

from bench import probe

app = Celery("plain", broker=os.environ["BENCH_BROKER_URL"], backend=os.environ.get("BENCH_RESULT_BACKEND"))


@app.task(name="plain.noop", shared=False)  # not shared: the bench process holds fleet apps too
def noop(sent_at: float, tag: str = "-") -> None:
    probe.record(sent_at, tag)


@app.task(name="plain.store", shared=False)
def store(sent_at: float) -> float:
    """bench.store's twin: its result is stored."""
    probe.record(sent_at, "store")
    return sent_at
