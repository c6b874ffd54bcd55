"""api_enqueue: confirmed enqueues through fleet's API under gunicorn, against the naive endpoint.

Load comes from wrk over loopback (bounded: fixed connections, fixed seconds).
fleet: ``POST /api/tasks`` (answers 202 only after RabbitMQ confirmed) and
``POST /api/tasks/batch`` with 100 tasks a request. Naive: the Celery + Flask
guide's ``delay()`` endpoint (no confirms), under gunicorn's gthread workers with
fleet's worker and thread counts and a listening socket per worker, as ``fleet
api`` has; the same endpoint with Celery's own publisher confirms (what fleet's
202 promises, made with Celery alone); and the unconfirmed one on gevent workers,
``fleet api``'s default class, so the server's share of the difference shows.
After each batch figure, the raw py-amqp confirmed publish (the transport
scenario's ceiling) of ``tasks`` messages, so the batch endpoint's ratio to it
does not depend on how the machine drifts between scenarios. All alternate,
repeat after repeat; medians. Nothing consumes; the queues are purged after
each figure.

``BENCH_API_PROFILE=1`` adds one more ``POST /api/tasks`` load after the
figures with py-spy (the bench extra) recording every gunicorn worker; the raw
flame-graph files land in the run's work directory (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from bench import rawamqp
from bench.harness import Bench, median_of, purge, say
from bench.profile import record
from bench.scenarios.fleet import fleet_app
from fleet.settings import Settings, load_settings
from fleet.testing.broker import queue_depth
from fleet.testing.ports import free_port

CONNECTIONS = 16
WRK_THREADS = 2
BATCH = 100
RAW_QUEUE = "bench.raw.api"


def available() -> str | None:
    """Why the scenario cannot run yet, or None."""
    if importlib.util.find_spec("fleet.api") is None:
        return "fleet's API (POST /api/tasks, /api/tasks/batch) is not in this tree yet"
    return None


def run(bench: Bench) -> dict[str, Any]:
    reason = available()
    if reason:
        return {"status": "pending", "reason": reason, "requests_per_s": None}
    with bench.vhost() as vhost:
        probe = bench.probe("api_enqueue")
        port, naive_port, confirmed_port, gevent_port = free_port(), free_port(), free_port(), free_port()
        env = bench.env(vhost, probe, FLEET_API_BIND=f"127.0.0.1:{port}")
        settings = load_settings(env)
        fleet_app(env).close()  # topology declared before the first request
        base = f"http://127.0.0.1:{port}"
        naive_url, confirmed_url, gevent_url = (
            f"http://127.0.0.1:{p}/tasks" for p in (naive_port, confirmed_port, gevent_port)
        )
        api = bench.start("api", ["fleet", "api"], env)
        # Idle servers cost nothing; all run side by side.
        bench.start("naive-api", _naive_argv(naive_port, settings), env)
        bench.start("naive-confirmed-api", _naive_argv(confirmed_port, settings, confirmed=True), env)
        bench.start("naive-gevent-api", _naive_argv(gevent_port, settings, worker_class="gevent"), env)
        _wait_http(bench, f"{base}/healthz")
        for url in (naive_url, confirmed_url, gevent_url):
            _wait_http(bench, url, method="POST")
        rawamqp.declare(vhost.url, RAW_QUEUE)
        one = _task_body(0.0)
        runs: dict[str, list[dict[str, Any]]] = {
            "single": [], "batch": [], "naive": [], "naive_confirmed": [], "naive_gevent": [],
        }  # fmt: skip
        raw: list[float] = []
        # Interleaved, repeat after repeat, so a drifting machine hits fleet and naive alike.
        for index in range(bench.sizes.repeats):
            say(f"api_enqueue: repeat {index + 1}/{bench.sizes.repeats}")
            runs["single"].append(_wrk(bench, "api-single", f"{base}/api/tasks", one))
            _check_queued(vhost.url, runs["single"][-1], per_request=1)
            runs["naive"].append(_wrk(bench, "naive", naive_url, {"sent_at": 0.0}))
            purge(vhost.url, "default")
            runs["naive_confirmed"].append(_wrk(bench, "naive-confirmed", confirmed_url, {"sent_at": 0.0}))
            purge(vhost.url, "default")
            runs["naive_gevent"].append(_wrk(bench, "naive-gevent", gevent_url, {"sent_at": 0.0}))
            purge(vhost.url, "default")
            runs["batch"].append(_wrk(bench, "api-batch", f"{base}/api/tasks/batch", {"tasks": [one] * BATCH}))
            _check_queued(vhost.url, runs["batch"][-1], per_request=BATCH)
            raw.append(_raw_confirmed(vhost.url, bench.sizes.tasks))
        if os.environ.get("BENCH_API_PROFILE") == "1" and api.proc is not None:
            _profile(bench, api.proc.pid, f"{base}/api/tasks", one)
            purge(vhost.url, "default")
        bench.stop_all()
    single, batch, naive, confirmed, naive_gevent = (
        _medians(runs[name]) for name in ("single", "batch", "naive", "naive_confirmed", "naive_gevent")
    )
    return {
        **single,
        "batch": {
            **batch,
            "tasks_per_s": round(batch["requests_per_s"] * BATCH, 1),
            "tasks_per_request": BATCH,
            "raw_confirmed_per_s": round(median_of(raw), 1),
            "raw_confirmed_runs": [round(rate, 1) for rate in raw],
        },
        "naive": naive,
        "naive_confirmed": confirmed,
        "naive_gevent": naive_gevent,
        "load": {"connections": CONNECTIONS, "wrk_threads": WRK_THREADS, "seconds": bench.sizes.api_seconds},
        "gunicorn": {
            "workers": settings.api_workers,
            "worker_class": settings.api_worker_class,
            "naive_threads": settings.api_threads,
        },
    }


def _naive_argv(port: int, settings: Settings, confirmed: bool = False, worker_class: str = "gthread") -> list[str]:
    """The guide's endpoint under gunicorn with fleet's worker count, on fleet's gthread threads or on gevent.

    --reuse-port as `fleet api` runs it: on one shared socket a worker can take every keep-alive
    connection, and the naive figure came in two modes, about 550/s and 1,050/s (PERFORMANCE.md).
    """
    argv = ["gunicorn", "--bind", f"127.0.0.1:{port}", "--reuse-port", "--workers", str(settings.api_workers)]
    concurrency = ["--threads", str(settings.api_threads)] if worker_class == "gthread" else []
    app = f"bench.apps.naive_api:create_app(confirmed={confirmed})"
    return [*argv, "--worker-class", worker_class, *concurrency, app]


def _raw_confirmed(url: str, count: int) -> float:
    """The ceiling beside the batch figure: raw py-amqp confirmed publishes per second."""
    start, end = rawamqp.publish_confirmed(url, RAW_QUEUE, count)
    purge(url, RAW_QUEUE)
    rate = count / (end - start)
    say(f"api_enqueue raw py-amqp confirmed publish, alongside: {rate:,.0f} publishes/s")
    return rate


def _profile(bench: Bench, master: int, url: str, body: dict[str, Any]) -> None:
    """py-spy on each gunicorn worker (children of ``master``) while wrk loads ``url``; raw stacks per worker."""
    workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    seconds = bench.sizes.api_seconds
    spies = [record(int(pid), seconds + 1, bench.work / f"api-profile-{pid}.txt", gil=False) for pid in workers]
    time.sleep(1)  # py-spy attached
    _wrk(bench, "api-single-profiled", url, body)
    for spy in spies:
        spy.wait(timeout=seconds + 60)
    say(f"api_enqueue: py-spy stacks of {len(workers)} gunicorn workers in {bench.work}/api-profile-*.txt")


def _medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median rate and percentiles over repeats; every repeat's rate kept beside them."""
    return {
        "requests_per_s": round(median_of([r["requests_per_s"] for r in results]), 1),
        "p50_ms": round(median_of([r["p50_ms"] for r in results]), 2),
        "p99_ms": round(median_of([r["p99_ms"] for r in results]), 2),
        "non_2xx": sum(r["non_2xx"] for r in results),
        "runs": [r["requests_per_s"] for r in results],
    }


def _task_body(sent_at: float) -> dict[str, Any]:
    return {"task": "bench.noop", "args": [sent_at]}


def _wait_http(bench: Bench, url: str, method: str = "GET", timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bench.alive()
        try:
            if requests.request(method, url, json={}, timeout=2).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s")


def _wrk(bench: Bench, name: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """wrk for ``api_seconds`` after a short warm-up; requests/s and latency percentiles."""
    script = bench.work / f"{name}.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{json.dumps(body)}]]\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    _run_wrk(script, url, 1)  # warm-up: connections, gunicorn threads, the publisher's channel
    result = _run_wrk(script, url, bench.sizes.api_seconds)
    say(f"api_enqueue {name}: {result['requests_per_s']:,.0f} requests/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, non-2xx {result['non_2xx']}")  # fmt: skip
    return result


def _run_wrk(script: Path, url: str, seconds: int) -> dict[str, Any]:
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, total requests, non-2xx count and p50/p99 (ms) from ``wrk --latency`` output."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        return round(float(match.group(1)) * _UNITS[match.group(2)], 2) if match else float("nan")

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:(.*)", output)
    return {
        "requests_per_s": round(float(rate.group(1)), 1) if rate else None,
        "requests": int(total.group(1)) if total else None,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def _check_queued(url: str, result: dict[str, Any], per_request: int) -> None:
    """Every 202 was a confirmed message: the queue holds at least that many (warm-up adds some)."""
    accepted = (result["requests"] or 0) - result["non_2xx"]
    depth = queue_depth(url, "default")[0]
    result["queued"] = depth
    if depth < accepted * per_request:
        raise RuntimeError(f"{accepted * per_request} tasks accepted but only {depth} in the queue")
    purge(url, "default")
