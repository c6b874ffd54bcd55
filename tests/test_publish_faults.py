"""Clients that retry with an Idempotency-Key until 202 get exactly one run, whatever the broker does.

On a disposable node (never the shared one), under a memory alarm, a disk
alarm, a frozen broker (SIGSTOP, then SIGCONT) and a broker restart, clients
retry each key until 202. Every 503 must arrive within FLEET_PUBLISH_TIMEOUT +
0.5 s and say what became of the publish; every key must run exactly once (the
loss ledger counts runs); /healthz must answer throughout. Under an alarm a
batch and an ETL canvas answer 503 within the same bound instead of hanging.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from fleet.testing.processes import FleetProcess, start_worker
from tests.support.api import ApiServer
from tests.support.disposable_rabbit import DisposableRabbit
from tests.support.ledger import Ledger

PUBLISH_TIMEOUT = 2.0
BOUND = PUBLISH_TIMEOUT + 0.5  # the contract: a 503 within FLEET_PUBLISH_TIMEOUT + 0.5 s
KEYS = 6  # keys per fault, three clients at a time
HOLD = 6.0  # seconds each fault lasts once the clients are running


@pytest.fixture(scope="module")
def env(
    rabbit: DisposableRabbit, fleet_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    var_dir = tmp_path_factory.mktemp("publish-faults-var")
    return {
        **fleet_env,
        "CELERY_BROKER_URL": rabbit.url,
        "FLEET_VAR_DIR": str(var_dir),
        "FLEET_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
    }


@pytest.fixture(scope="module")
def api(env: dict[str, str]) -> Iterator[ApiServer]:
    server = ApiServer(env, Path(env["FLEET_VAR_DIR"]) / "log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(env: dict[str, str]) -> Iterator[FleetProcess]:
    process = start_worker("default", env, Path(env["FLEET_VAR_DIR"]) / "log")
    yield process
    process.stop()


class HealthProbe(threading.Thread):
    """Polls /healthz from its own thread while a fault lasts; keeps every failure."""

    def __init__(self, api: ApiServer) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.stopped = threading.Event()
        self.answers = 0
        self.failures: list[str] = []
        self.slowest = 0.0

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                response = requests.get(self.api.url("/healthz"), timeout=2)
                if response.status_code != 200:
                    self.failures.append(f"status {response.status_code}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.answers += 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.stopped.wait(0.2)

    def __enter__(self) -> HealthProbe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(5)


@dataclass
class Client:
    """One key, retried until 202 (or a give-up deadline), with every 503 timed."""

    key: str
    unavailable: list[tuple[float, str]] = field(default_factory=list)  # (seconds, outcome)
    task_id: str | None = None


def retry_until_accepted(api: ApiServer, ledger: Ledger, key: str, give_up: float = 120) -> Client:
    client = Client(key)
    payload = {"task": "tests.record", "args": [ledger.key, 0]}
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        started = time.monotonic()
        response = requests.post(
            api.url("/api/tasks"), json=payload, headers={"Idempotency-Key": key}, timeout=BOUND + 10
        )
        elapsed = time.monotonic() - started
        if response.status_code == 202:
            client.task_id = response.json()["task_id"]
            return client
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["error"] == "broker_unavailable" and "Retry-After" in response.headers, body
        client.unavailable.append((elapsed, body["outcome"]))
        time.sleep(0.3)
    raise AssertionError(f"{key} never accepted: {client}")


def alarm_active(rabbit: DisposableRabbit) -> bool:
    return rabbit.ctl("eval", "rabbit_alarm:get_alarms().").strip() not in ("[]", "")


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def run_clients(api: ApiServer, ledger: Ledger, end_fault: Callable[[], None], name: str) -> list[Client]:
    """KEYS clients retrying until 202 while the fault lasts HOLD seconds more; /healthz polled throughout."""
    ender = threading.Timer(HOLD, end_fault)
    with HealthProbe(api) as probe:
        ender.start()
        try:
            with ThreadPoolExecutor(3) as pool:
                clients = list(
                    pool.map(lambda n: retry_until_accepted(api, ledger, f"{name}-{uuid.uuid4()}-{n}"), range(KEYS))
                )
        finally:
            ender.join()
    assert not probe.failures, f"/healthz failed during {name}: {probe.failures[:5]}"
    assert probe.answers > 0
    accepted = [client.task_id for client in clients]
    tally = ledger.wait_for(accepted, timeout=120)
    assert not tally.lost and not tally.duplicated and not tally.unexpected, tally
    assert all(runs == 1 for runs in ledger.completions().values())
    times = [seconds for client in clients for seconds, _ in client.unavailable]
    outcomes = [outcome for client in clients for _, outcome in client.unavailable]
    assert all(seconds < BOUND for seconds in times), f"503 slower than {BOUND}s: {max(times):.2f}s"
    assert set(outcomes) <= {"none", "unknown"}
    print(
        f"{name}: {KEYS} keys, {len(times)} 503s (unknown {outcomes.count('unknown')}, none {outcomes.count('none')}),"
        f" slowest 503 {max(times, default=0):.2f}s, runs per key {sorted(set(ledger.completions().values()))},"
        f" /healthz {probe.answers} answers, slowest {probe.slowest:.3f}s"
    )
    return clients


def timed_post(api: ApiServer, path: str, payload: dict) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(api.url(path), json=payload, timeout=BOUND + 30)
    return response, time.monotonic() - started


def test_memory_alarm(api: ApiServer, worker: FleetProcess, rabbit: DisposableRabbit, ledger: Ledger) -> None:
    rabbit.raise_memory_alarm()
    try:
        wait_for(lambda: alarm_active(rabbit))
        # A batch and a canvas are bounded by the same deadline, once.
        other = Ledger()
        batch, batch_seconds = timed_post(
            api, "/api/tasks/batch", {"tasks": [{"task": "tests.record", "args": [other.key, 0]}] * 20}
        )
        etl, etl_seconds = timed_post(api, "/api/etl/single/1", {"records": 5})
        for response, seconds in ((batch, batch_seconds), (etl, etl_seconds)):
            assert response.status_code == 503, response.text
            assert response.json()["outcome"] in ("none", "unknown")
            assert seconds < BOUND, f"{response.request.path_url} took {seconds:.2f}s"
        print(f"memory alarm: batch 503 in {batch_seconds:.2f}s, ETL canvas 503 in {etl_seconds:.2f}s")
    except BaseException:
        rabbit.clear_memory_alarm()
        raise
    clients = run_clients(api, ledger, rabbit.clear_memory_alarm, "memory alarm")
    assert any(outcome == "unknown" for client in clients for _, outcome in client.unavailable)
    other.drop()


def test_disk_alarm(api: ApiServer, worker: FleetProcess, rabbit: DisposableRabbit, ledger: Ledger) -> None:
    rabbit.raise_disk_alarm()
    try:
        wait_for(lambda: alarm_active(rabbit))
    except BaseException:
        rabbit.clear_disk_alarm()
        raise
    run_clients(api, ledger, rabbit.clear_disk_alarm, "disk alarm")


def test_frozen_broker(api: ApiServer, worker: FleetProcess, rabbit: DisposableRabbit, ledger: Ledger) -> None:
    pid = rabbit.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        run_clients(api, ledger, lambda: os.kill(pid, signal.SIGCONT), "SIGSTOP")
    finally:
        os.kill(pid, signal.SIGCONT)


def test_broker_restart(api: ApiServer, worker: FleetProcess, rabbit: DisposableRabbit, ledger: Ledger) -> None:
    assert (
        requests.post(api.url("/api/tasks"), json={"task": "tests.sleep", "args": [0]}, timeout=10).status_code == 202
    )
    rabbit.stop()
    try:
        run_clients(api, ledger, rabbit.start, "restart")
    finally:
        if rabbit.pid() is None:
            rabbit.start()
    assert worker.proc is not None and worker.proc.poll() is None
