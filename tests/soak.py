"""`make soak`: minutes of mixed load with random faults, ending with every task accounted for.

Runs on a disposable RabbitMQ node with two real pools. Faults, chosen at random
every 20-40 s: the broker killed -9 and restarted, a pool child killed -9, a whole
worker killed -9 and started again. Prints the tally and writes var/soak-latest.json;
exits 1 if any accepted task was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from fleet.celery_app import create_celery
from fleet.publish import PublishError, publish_many
from fleet.settings import ROOT, load_settings
from fleet.testing.processes import start_worker
from tests.support.disposable_rabbit import DisposableRabbit
from tests.support.ledger import Ledger

POOLS = ("default", "high_priority")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=40, help="tasks published per second")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-soak-"))
    ledger = Ledger()
    faults: dict[str, int] = {"broker": 0, "child": 0, "worker": 0}
    accepted: list[str] = []
    publish_failures = 0
    with DisposableRabbit() as node:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "CELERY_"))},
            "CELERY_BROKER_URL": node.url,
            "FLEET_VAR_DIR": str(work / "var"),
            "FLEET_TASK_MODULES": "tests.support.chaos_tasks",
            "PYTHONPATH": str(ROOT),
        }
        app = create_celery(load_settings(env))
        workers = {pool: start_worker(pool, env, work / "log") for pool in POOLS}
        started = time.monotonic()
        next_fault = started + random.uniform(20, 40)
        while time.monotonic() - started < options.minutes * 60:
            calls = [
                ("tests.record", (ledger.key, random.choice((0, 0.01, 0.05))), {}, {"queue": random.choice(POOLS)})
                for _ in range(options.rate)
            ]
            try:
                accepted += publish_many(app, calls, timeout=10)
            except PublishError:
                publish_failures += 1  # not accepted, so not counted; a client would retry
            except OSError:
                publish_failures += 1
            if time.monotonic() >= next_fault:
                fault = random.choice(tuple(faults))
                faults[fault] += 1
                print(
                    f"[{time.monotonic() - started:6.0f}s] fault: {fault}; accepted so far {len(accepted)}", flush=True
                )
                if fault == "broker":
                    node.kill()
                    time.sleep(2)
                    node.start()
                elif fault == "child":
                    pool = random.choice(POOLS)
                    children = _children(workers[pool].pid)
                    if children:
                        os.kill(random.choice(children), signal.SIGKILL)
                else:
                    pool = random.choice(POOLS)
                    workers[pool].kill()
                    workers[pool] = start_worker(pool, env, work / "log")
                next_fault = time.monotonic() + random.uniform(20, 40)
            time.sleep(max(0.0, 1 - (time.monotonic() - started) % 1))
        tally = ledger.wait_for(accepted, timeout=300)
        for worker in workers.values():
            worker.stop()
    ledger.drop()
    report = {
        "minutes": options.minutes,
        "accepted": len(accepted),
        "completed": len(accepted) - len(tally.lost),
        "lost": len(tally.lost),
        "duplicated": len(tally.duplicated),
        "unexpected": len(tally.unexpected),
        "publish_batches_refused": publish_failures,
        "faults": faults,
    }
    print(json.dumps(report, indent=2))
    out = ROOT / "var" / "soak-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 1 if tally.lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
