"""transport: what the AMQP client costs, and what librabbitmq would buy (docs/TRANSPORT.md).

Publish rates into a durable queue, nothing consuming: kombu on py-amqp
unconfirmed and confirmed one by one, fleet's ``publish_many`` (pipelined
confirms) in batches of 1000 and of 100, the raw py-amqp confirmed publish of
the ceiling alternating with the batches of 1000 (the batch goal's yardstick),
and, when bench/.venv-librabbitmq exists, kombu on librabbitmq unconfirmed (it
has no publisher confirms).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import rawamqp
from bench.harness import ROOT, Bench, median_of, purge, repeat, say
from bench.scenarios.fleet import fleet_app, fleet_publisher

QUEUE = "bench.transport"
RAW_QUEUE = "bench.transport.raw"
LIBRABBITMQ_PYTHON = ROOT / "bench" / ".venv-librabbitmq" / "bin" / "python"


def kombu_rate(python: Path | str, url: str, transport: str, mode: str, count: int, repeats: int) -> dict:
    argv = [str(python), "-m", "bench.kombu_publish", url, QUEUE, "--transport", transport, "--mode", mode]
    argv += ["--count", str(count), "--repeats", str(repeats)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for i, rate in enumerate(result["runs"]):
        say(f"transport {transport} {mode}: repeat {i + 1}/{repeats}: {rate:,.0f} publishes/s")
    return {"per_s": round(median_of(result["runs"]), 1), "runs": [round(r, 1) for r in result["runs"]], **result}


def _librabbitmq_installed() -> bool:
    if not LIBRABBITMQ_PYTHON.exists():
        return False
    done = subprocess.run([str(LIBRABBITMQ_PYTHON), "-c", "import librabbitmq"], capture_output=True, check=False)
    return done.returncode == 0


def batch_rate(bench: Bench, app: Any, batch: int, raw_runs: list[float] | None = None) -> list[float]:
    """``publish_many`` in batches of ``batch``, repeated. With ``raw_runs``, each repeat is followed
    by the ceiling's confirmed publish of as many messages (appended there): the two alternate, so
    the ratio of their medians does not depend on how the machine drifts between scenarios."""
    url = app.fleet_settings.broker_url
    publish = fleet_publisher(app, batch=batch)
    n = bench.sizes.tasks
    publish(min(n, 1000))  # warm-up
    if raw_runs is not None:
        rawamqp.declare(url, RAW_QUEUE)

    def once(_: int) -> float:
        purge(url, "default")
        start = time.perf_counter()
        publish(n)
        rate = n / (time.perf_counter() - start)
        if raw_runs is not None:
            purge(url, RAW_QUEUE)
            raw_start, raw_end = rawamqp.publish_confirmed(url, RAW_QUEUE, n)
            raw_runs.append(n / (raw_end - raw_start))
            say(f"transport raw py-amqp confirmed publish, alongside: {raw_runs[-1]:,.0f} publishes/s")
        return rate

    runs = repeat(f"transport publish_many batch={batch}", bench.sizes.repeats, once, unit="publishes/s")
    purge(url, "default")
    if raw_runs is not None:
        purge(url, RAW_QUEUE)
    return runs


def run(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    result: dict[str, Any] = {}
    with bench.vhost() as vhost:
        unconfirmed = kombu_rate(sys.executable, vhost.url, "pyamqp", "unconfirmed", sizes.raw_publishes, sizes.repeats)
        confirmed = kombu_rate(
            sys.executable, vhost.url, "pyamqp", "confirmed", sizes.confirmed_publishes, sizes.repeats
        )
        result["pyamqp_unconfirmed_per_s"] = unconfirmed["per_s"]
        result["pyamqp_confirmed_per_s"] = confirmed["per_s"]
        result["pyamqp_transport"] = unconfirmed["transport"]
        app = fleet_app(bench.env(vhost, bench.probe("transport")))
        raw: list[float] = []
        try:
            batch_1000 = batch_rate(bench, app, 1000, raw_runs=raw)
            batch_100 = batch_rate(bench, app, 100)
        finally:
            app.close()
        result["publish_many_per_s"] = round(median_of(batch_1000), 1)
        result["publish_many_runs"] = [round(r, 1) for r in batch_1000]
        result["raw_confirmed_per_s"] = round(median_of(raw), 1)
        result["raw_confirmed_runs"] = [round(r, 1) for r in raw]
        result["publish_many_100_per_s"] = round(median_of(batch_100), 1)
        result["publish_many_100_runs"] = [round(r, 1) for r in batch_100]
        if _librabbitmq_installed():
            c = kombu_rate(
                LIBRABBITMQ_PYTHON, vhost.url, "librabbitmq", "unconfirmed", sizes.raw_publishes, sizes.repeats
            )
            result["librabbitmq_unconfirmed_per_s"] = c["per_s"]
            result["librabbitmq_runs"] = c["runs"]
            result["librabbitmq_transport"] = c["transport"]
            result["librabbitmq_vs_publish_many"] = round(c["per_s"] / result["publish_many_per_s"], 2)
        else:
            result["librabbitmq_unconfirmed_per_s"] = None
            result["librabbitmq_reason"] = "not measured: librabbitmq-fork is not in bench/.venv-librabbitmq"
    result["librabbitmq_vs_pyamqp_unconfirmed"] = (
        round(result["librabbitmq_unconfirmed_per_s"] / result["pyamqp_unconfirmed_per_s"], 2)
        if result["librabbitmq_unconfirmed_per_s"]
        else None
    )
    return result
