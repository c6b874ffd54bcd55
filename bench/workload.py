"""The shared no-op workload: publish N tasks, wait until the worker ran all of them.

End to end is measured from the first publish to the last task run (the probe's
timestamps), so publishing and consuming compete for the same two cores, as they
do in production. Drain is the rate at which a preloaded queue empties.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from celery import Celery

from bench.harness import Bench, repeat, say
from bench.probe import Probe
from fleet.ops.pause import PauseStore

Publish = Callable[[int], object]


def load_peer(module: str, url: str) -> ModuleType:
    """Import a peer app (configured from BENCH_BROKER_URL, as its docs would have it) for ``url``."""
    os.environ["BENCH_BROKER_URL"] = url
    if module in sys.modules:
        return importlib.reload(sys.modules[module])
    return importlib.import_module(module)


def warm_up(bench: Bench, probe: Probe, publish: Publish) -> None:
    """Publish the warm-up batch and wait for it: also how we know the worker is consuming."""
    probe.reset()
    publish(bench.sizes.warmup)
    probe.wait(bench.sizes.warmup, timeout=bench.sizes.timeout, alive=bench.alive)


def end_to_end(bench: Bench, name: str, probe: Probe, publish: Publish) -> list[float]:
    """Repeated: publish ``tasks`` no-ops and wait for the last to run; tasks/s for each repeat."""
    return repeat(
        f"{name} end to end", bench.sizes.repeats, lambda _: timed_run(bench, probe, publish, bench.sizes.tasks)
    )


def timed_run(bench: Bench, probe: Probe, publish: Publish, n: int) -> float:
    """Publish ``n`` tasks, wait for all to run; tasks/s from the first publish to the last run."""
    probe.reset()
    start = time.time()
    publish(n)
    probe.wait(n, timeout=bench.sizes.timeout, alive=bench.alive)
    return n / (max(run.ran_at for run in probe.runs()) - start)


def end_to_end_cpu(bench: Bench, name: str, probe: Probe, publish: Publish) -> tuple[list[float], float | None]:
    """:func:`end_to_end`, and the CPU its workers (every process ``bench`` started) spent per task, in µs."""
    with bench.cpu() as used:
        runs = end_to_end(bench, name, probe, publish)
    per_task = used.per_task_us(bench.sizes.tasks * bench.sizes.repeats)
    say(f"{name}: workers used {used.seconds:.1f} CPU seconds, {per_task} µs per task")
    return runs, per_task


def drain(
    bench: Bench,
    name: str,
    probe: Probe,
    publish: Publish,
    app: Celery,
    queue: str,
    workers: int = 1,
    pauses: PauseStore | None = None,
) -> list[float]:
    """Repeated: with the worker's consumer cancelled, preload ``tasks`` no-ops, then let it consume.

    The rate runs from the first task run to the last, so the control round trip is not counted.
    ``pauses``: fleet's pause flags, raised while the consumer is cancelled. fleet's workers
    consume again on their next heartbeat any queue that is not flagged (fleet.worker.pausing),
    so a bare ``cancel_consumer`` would let them start in the middle of the preload.
    """
    n = bench.sizes.tasks

    def once(_: int) -> float:
        if pauses is not None:
            pauses.pause(queue, "bench")
        _control(app, "cancel_consumer", queue, workers)
        probe.reset()
        publish(n)
        if pauses is not None:
            pauses.resume(queue)
        _control(app, "add_consumer", queue, workers)
        probe.wait(n, timeout=bench.sizes.timeout, alive=bench.alive)
        times = sorted(run.ran_at for run in probe.runs())
        return (n - 1) / (times[-1] - times[0])

    return repeat(f"{name} drain", bench.sizes.repeats, once)


def _control(app: Celery, command: str, queue: str, workers: int) -> None:
    replies: Any = getattr(app.control, command)(queue, reply=True, timeout=10, limit=workers)
    if len(replies or []) < workers:
        raise RuntimeError(f"{len(replies or [])} of {workers} workers answered {command} {queue}")
