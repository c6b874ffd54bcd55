"""`python -m bench.profile [--task bench.noop] [--seconds 20]`: whose code the `default` pool's CPU runs.

The `default` pool's workers consume no-ops published without pause while py-spy
samples, in each worker process, the thread holding the GIL (``--gil``: a
sample is Python running, never a thread waiting). Each sample goes to the
innermost frame owned by fleet, Celery, the AMQP stack (kombu, py-amqp, vine),
Flask or the bench's task; library code below it (json, logging, threading)
counts for its caller. Handing a task to a pool thread (``ThreadPoolExecutor``)
is its own line. Printed as a Markdown table; the raw stacks stay in the run's
directory. How docs/PERFORMANCE.md's "What is left, goal by goal" was measured.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from bench.harness import BIN, QUICK, Bench, say
from bench.scenarios.fleet import fleet_publisher, fleet_side
from bench.workload import warm_up

HAND_OFF = "handing the task to a pool thread (ThreadPoolExecutor)"
#: (owner, what marks its frames in py-spy's paths), innermost match wins
OWNERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the task (the no-op and the bench probe)", ("(bench/",)),
    ("fleet", ("(fleet/",)),
    ("Celery", ("(celery/",)),
    ("AMQP stack (kombu, py-amqp, vine)", ("(kombu/", "(amqp/", "(vine/")),
    ("Flask (the app context)", ("(flask/", "(werkzeug/")),
)
UNOWNED = "standard library alone"
#: a pool thread's own loop, outside any task: it is taking the next one off the queue
POOL_THREAD_WAKING = "_worker (concurrent/futures/thread.py"
PLACES = 15


def attribute(frames: list[str]) -> tuple[str, str]:
    """Who a sample's CPU belongs to, and the frame it is charged to: the pool hand-off, or the
    innermost frame with an owner."""
    for frame in frames:
        if "ThreadPoolExecutor.submit" in frame:
            return HAND_OFF, frame
    if frames[-1].startswith(POOL_THREAD_WAKING):
        return HAND_OFF, frames[-1]
    for frame in reversed(frames):
        for name, marks in OWNERS:
            if any(mark in frame for mark in marks):
                return name, frame
    return UNOWNED, frames[-1]


def samples(lines: Iterable[str]) -> Iterator[tuple[list[str], int]]:
    """(frames, count) of each sample line in py-spy ``--format raw`` output (``frame;frame;... count``)."""
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def tally(lines: Iterable[str]) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """Shares of the samples in py-spy raw lines: by owner, and by (owner, function) with the line
    numbers dropped."""
    owners: Counter[str] = Counter()
    places: Counter[tuple[str, str]] = Counter()
    for frames, count in samples(lines):
        name, frame = attribute(frames)
        owners[name] += count
        places[name, re.sub(r":\d+\)$", ")", frame)] += count
    total = sum(owners.values())
    if not total:
        return {}, {}
    return (
        {name: count / total for name, count in owners.most_common()},
        {place: count / total for place, count in places.most_common()},
    )


def record(pid: int, seconds: int, output: Path, gil: bool = True) -> subprocess.Popen[bytes]:
    """py-spy sampling process ``pid`` for ``seconds`` into ``output`` (raw stacks; with ``gil``, only
    the thread holding the GIL), started; wait on it."""
    argv = [str(BIN / "py-spy"), "record", "--nonblocking", "--rate", "250", "--format", "raw"]
    argv += ["--duration", str(seconds), "--pid", str(pid), "--output", str(output)] + (["--gil"] if gil else [])
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="bench.noop")
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-profile-"))
    bench = Bench(sizes=QUICK, work=work, overrides={})
    with fleet_side(bench, "profile") as side:
        workers = side.start(bench, "profile")
        publish = fleet_publisher(side.app, task=args.task)
        warm_up(bench, side.probe, publish)
        publish(10_000)  # a backlog, so the workers never wait for the publisher
        done = threading.Event()

        def feed() -> None:
            while not done.is_set():
                publish(2000)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        pids = [process.proc.pid for process in workers if process.proc is not None]
        outputs = [work / f"stacks-{pid}.txt" for pid in pids]
        spies = [record(pid, args.seconds, output) for pid, output in zip(pids, outputs, strict=True)]
        for spy in spies:
            spy.wait(timeout=args.seconds + 60)
        done.set()
        feeder.join(timeout=120)
    recorded = [output for output in outputs if output.exists()]
    if not recorded:
        raise SystemExit(f"py-spy recorded nothing (it needs ptrace rights over the workers); see {work / 'log'}")
    lines = [line for output in recorded for line in output.read_text().splitlines()]
    say(f"profile: {sum(count for _, count in samples(lines))} samples; stacks in {work}")
    owners, places = tally(lines)
    print("| whose code | share of the samples |\n| --- | --- |")
    for name, share in owners.items():
        print(f"| {name} | {share:.1%} |")
    print("\n| the largest places (innermost owned frame) | owner | share |\n| --- | --- | --- |")
    for (name, frame), share in list(places.items())[:PLACES]:
        print(f"| `{frame}` | {name} | {share:.1%} |")


if __name__ == "__main__":
    main()
