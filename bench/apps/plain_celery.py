"""A plain Celery app with Celery's defaults: what `celery_defaults` measures.

Prefork with one child per core, prefetch multiplier 4, early acks, no
publisher confirms, no result backend. Only the broker URL is set.
"""

from __future__ import annotations

import os

from celery import Celery

from bench import probe

app = Celery("plain", broker=os.environ["BENCH_BROKER_URL"])


@app.task(name="plain.noop")
def noop(sent_at: float, tag: str = "-") -> None:
    probe.record(sent_at, tag)
