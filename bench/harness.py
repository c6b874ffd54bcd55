"""What every scenario shares: sizes, a private vhost, process start-up, repeats, progress."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu import Connection

from bench import cpu
from bench.probe import PROBE_ENV, Probe
from fleet.pools import beat_metrics_port
from fleet.testing.broker import Vhost
from fleet.testing.ports import free_port_block
from fleet.testing.processes import FleetProcess
from queues import Policy

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, stamped with the time since the run started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Sizes:
    """How much work a run does; QUICK=1 keeps the whole run near five minutes, a full run under twenty."""

    tasks: int  # per repeat of a throughput scenario
    warmup: int
    repeats: int
    flood: int  # backlog per flooded queue
    probes: int  # high_priority tasks sent during the flood
    raw_publishes: int  # unconfirmed raw publishes per repeat
    confirmed_publishes: int  # one-by-one confirmed publishes per repeat
    api_seconds: int
    cpu_tasks: int  # per window of cpu_bound (about 5 ms each)
    io_tasks: int  # per window of io_bound (20 ms waits)
    result_tasks: int  # per repeat of results, per side and backend
    metrics_rounds: int  # rounds of metrics_overhead (both sides at once)
    metrics_tasks: int  # per side and round
    timeout: float = 180.0


QUICK = Sizes(
    tasks=2000, warmup=300, repeats=3, flood=10_000, probes=200, raw_publishes=10_000, confirmed_publishes=600,
    api_seconds=4, cpu_tasks=400, io_tasks=1000, result_tasks=500, metrics_rounds=10, metrics_tasks=2000,
)  # fmt: skip
FULL = Sizes(
    tasks=10_000, warmup=1000, repeats=5, flood=10_000, probes=1000, raw_publishes=40_000, confirmed_publishes=2000,
    api_seconds=15, cpu_tasks=500, io_tasks=2000, result_tasks=500, metrics_rounds=120, metrics_tasks=1000,
)  # fmt: skip


#: Every contender's classic queues run lazy: their backlog on disk, not in the
#: queue process's memory, as RabbitMQ 3.12 and later keep it whatever the mode.
#: This machine's broker may be older (its version is in the results); there, a
#: backlog built during a run stalls its queue's process, and every confirm waits
#: with it (docs/PERFORMANCE.md, "The backlog in the queue's memory").
LAZY_QUEUES = Policy("bench-lazy", ".*", {"queue-mode": "lazy"})


@dataclass
class Bench:
    """One `make bench` run: its sizes, scratch directory and environment overrides."""

    sizes: Sizes
    work: Path
    overrides: Mapping[str, str] = field(default_factory=dict)
    running: list[FleetProcess] = field(default_factory=list)

    @contextmanager
    def vhost(self) -> Iterator[Vhost]:
        """A fresh private vhost with lazy queues, removed with everything in it afterwards."""
        vhost = Vhost().create().set_policy(LAZY_QUEUES)
        try:
            yield vhost
        finally:
            vhost.delete()

    def probe(self, name: str) -> Probe:
        return Probe(self.work / f"{name}.probe")

    def env(self, vhost: Vhost, probe: Probe, **extra: str) -> dict[str, str]:
        """The environment of a benchmark process: the vhost, the probe file, `bench` importable,
        metrics ports of its own (two benchmarks, or a test, on the machine must not collide)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("FLEET_", "CELERY_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            BENCH_BROKER_URL=vhost.url,
            CELERY_BROKER_URL=vhost.url,
            FLEET_VAR_DIR=str(self.work / f"var-{probe.path.stem}"),
            FLEET_TASK_MODULES="bench.tasks",
            FLEET_METRICS_PORT=str(free_port_block(beat_metrics_port(0) + 1)),
            **{PROBE_ENV: str(probe.path)},
        )
        env.update(extra)
        env.update(self.overrides)
        return env

    def start(self, name: str, argv: list[str], env: Mapping[str, str], ready: str | None = None) -> FleetProcess:
        """Start a process with its output in the run's log directory; wait for ``ready`` in its log."""
        process = FleetProcess(argv, env, self.work / "log" / f"{name}.log").start()
        self.running.append(process)
        if ready:
            process.wait_for_log(ready, timeout=120)
        return process

    def alive(self) -> None:
        """Raise if a process this run started has died (with the end of its log)."""
        for process in self.running:
            if process.proc is not None and process.proc.poll() is not None and process.proc.returncode not in (0,):
                raise RuntimeError(f"{process.argv} exited with {process.proc.returncode}:\n{process.log()[-2000:]}")

    def cpu(self, processes: list[FleetProcess] | None = None) -> AbstractContextManager[cpu.CpuReading]:
        """Measure the CPU of ``processes`` (default: every process this run started), children included."""
        return cpu.measure(process.pid for process in (self.running if processes is None else processes))

    def stop(self, processes: list[FleetProcess]) -> None:
        """Stop these processes and forget them (a stopped process is not a dead one for :meth:`alive`)."""
        for process in processes:
            process.stop()
            if process in self.running:
                self.running.remove(process)

    def stop_all(self) -> None:
        self.stop(list(self.running))


def purge(url: str, queue: str) -> None:
    with Connection(url) as connection:
        connection.default_channel.queue_purge(queue)


def median_of(runs: list[float]) -> float:
    return statistics.median(runs) if runs else float("nan")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation, so p99 is a latency that really happened)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def repeat(name: str, times: int, once: Callable[[int], float], unit: str = "tasks/s") -> list[float]:
    """Run ``once(i)`` ``times`` times, saying each figure as it comes."""
    figures = []
    for i in range(times):
        figure = once(i)
        figures.append(figure)
        say(f"{name}: repeat {i + 1}/{times}: {figure:,.0f} {unit}")
    return figures


def summary(runs: list[float], key: str = "tasks_per_s", **extra: Any) -> dict[str, Any]:
    """A scenario's result: the median under ``key``, every repeat kept beside it."""
    return {key: round(median_of(runs), 1), "runs": [round(r, 1) for r in runs], **extra}
