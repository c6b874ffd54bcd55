"""``make run`` from a fresh checkout: it installs, renders, starts the whole fleet under supervisord,
answers on the API and runs one task on each of the four pools within 90 s; Ctrl-C stops it warmly.
In development it also starts the SMTP sink and the payment gateway stand-in the demo tasks talk to,
so nothing ends in a dead-letter queue, and supervisord logs no CRIT.

The checkout is a copy of the files git tracks (what a clone holds, without .venv or var). The run
gets a private vhost and its own ports, so it clashes with nothing else on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from email import message_from_bytes
from pathlib import Path

import pytest

from fleet.pools import POOLS
from fleet.testing.broker import Vhost, queue_depth
from fleet.testing.ports import free_port, free_port_block
from fleet.testing.processes import FleetProcess
from queues import WORK_QUEUES, dlq_name
from routing import queue_for
from tests.support.apps import app_for
from tests.support.supervised import clean_env, wait_http_ok

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 600  # a cold pip cache downloads every pinned dependency
FLEET_DEADLINE = 90  # from supervisord starting to one task done on every pool


def fresh_checkout(destination: Path) -> Path:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def make_env(**settings: str) -> dict[str, str]:
    """The environment of someone typing ``make run``: no virtualenv active, no outer make."""
    env = clean_env(**settings)
    for key in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONPATH"):
        env.pop(key, None)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def post_example(banner: str) -> dict:
    """Send the curl example ``make run`` printed, with urllib; the API's 202 body."""
    url = re.search(r"curl -s -X POST (\S+)", banner).group(1)
    body = re.search(r"-d '(\{.*\})'", banner).group(1)
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return json.loads(response.read())


# a cold install, the fleet, and a warm stop on a shared machine: more than the suite's default
@pytest.mark.timeout(INSTALL_TIMEOUT + FLEET_DEADLINE + 240)
def test_make_run_from_a_fresh_checkout(tmp_path: Path) -> None:
    home = fresh_checkout(tmp_path / "fleet")
    vhost = Vhost().create()
    api = f"127.0.0.1:{free_port()}"
    env = make_env(
        CELERY_BROKER_URL=vhost.url,
        FLEET_API_BIND=api,
        FLEET_METRICS_PORT=str(free_port_block(sum(spec.replicas for spec in POOLS.values()))),
        # the stand-ins serve wherever the settings point: free ports, away from anything else running
        FLEET_SMTP_HOST="127.0.0.1",
        FLEET_SMTP_PORT=str(free_port()),
        FLEET_PAYMENT_GATEWAY_URL=f"http://127.0.0.1:{free_port()}/payments",
    )
    figures: dict[str, float] = {}
    started = time.monotonic()
    make = FleetProcess(["make", "-C", str(home), "run"], env, tmp_path / "make-run.log").start()
    try:
        make.wait_for_log("starting supervisord", INSTALL_TIMEOUT)
        fleet_started = time.monotonic()
        figures["install + render (s)"] = round(fleet_started - started, 1)
        wait_http_ok(f"http://{api}/healthz", timeout=FLEET_DEADLINE)
        figures["API answering (s from supervisord)"] = round(time.monotonic() - fleet_started, 1)

        printed = make.log()
        assert f"fleet API:     http://{api}" in printed
        assert len(re.findall(r"http://127\.0\.0\.1:\d+/metrics", printed)) == sum(s.replicas for s in POOLS.values())
        assert "curl -s -X POST" in printed

        calls = {
            "tasks.process_payment": ("pay-make-run-1", "9.99", "card", "EUR"),
            "tasks.send_email": ("make-run@example.test", "hello", "from make run"),
            "tasks.generate_report": ("sales",),
        }
        assert {queue_for(name) for name in calls} | {queue_for("tasks.process_data")} == set(POOLS), "one per pool"
        run_env = {**env, "FLEET_VAR_DIR": str(home / "var")}  # the results the fleet writes
        with app_for(run_env) as app:
            results = {name: app.send_task(name, args) for name, args in calls.items()}
            # The fourth goes in through the API, exactly as the printed curl example sends it.
            results["tasks.process_data"] = app.AsyncResult(post_example(printed)["task_id"])
            left = FLEET_DEADLINE - (time.monotonic() - fleet_started)
            for name, result in results.items():
                result.get(timeout=max(left, 1))
                left = FLEET_DEADLINE - (time.monotonic() - fleet_started)
                assert result.state == "SUCCESS", name
                assert result.worker.startswith(f"{queue_for(name)}-"), f"{name} ran on {result.worker}"
        done = time.monotonic()
        figures["four pools done (s from supervisord)"] = round(done - fleet_started, 1)
        figures["four pools done (s from make run)"] = round(done - started, 1)
        assert done - fleet_started <= FLEET_DEADLINE
        assert results["tasks.process_payment"].result["gateway"]["status"] == "succeeded"
        kept = [message_from_bytes(p.read_bytes()) for p in (home / "var" / "dev" / "mail").glob("*.eml")]
        assert [m["To"] for m in kept] == ["make-run@example.test"], "the sink keeps what it received"
        assert {q: queue_depth(vhost.url, dlq_name(q))[0] for q in WORK_QUEUES} == dict.fromkeys(WORK_QUEUES, 0)

        # The console works in development: open without a login (no token set), saying so.
        with urllib.request.urlopen(f"http://{api}/console/", timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200 and "No API tokens are configured" in page
        assert all(f'data-queue="{queue}"' in page for queue in WORK_QUEUES), page[-2000:]
        with urllib.request.urlopen(f"http://{api}/api/ops/workers", timeout=30) as response:
            pools = {pool["name"]: pool for pool in json.loads(response.read())["pools"]}
        assert all(pools[name]["workers"] for name in POOLS), "every pool's workers answer"
    finally:
        # Ctrl-C: SIGINT to make's whole foreground group, as a terminal sends it.
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.proc.wait(120)
        except subprocess.TimeoutExpired:
            make.kill()
        vhost.delete()
        print(f"\nmake run figures: {figures}")

    supervisord_log = (home / "var" / "log" / "supervisord.log").read_text()
    assert "received SIGINT indicating exit request" in supervisord_log
    stopped = re.findall(r"stopped: (\S+) \(exit status 0\)", supervisord_log)
    # api, beat, every worker process, and the two stand-ins
    assert len(stopped) == 4 + sum(spec.replicas for spec in POOLS.values()), supervisord_log[-3000:]
    assert "CRIT" not in supervisord_log, "a quiet start"
    host = socket.gethostname()
    assert not [p for p in (home / "var" / "health").iterdir() if host in p.name], "every worker shut down cleanly"


def test_make_run_without_a_broker_says_how_to_get_one() -> None:
    """Nothing starts without RabbitMQ, and the message says what to do (127.0.0.2: never auto-started)."""
    env = make_env(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.2:{free_port()}//")
    done = subprocess.run(["make", "-C", str(ROOT), "run"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "nothing answers on 127.0.0.2" in done.stderr and "apt-get install -y rabbitmq-server" in done.stderr
    assert "make run: no broker, so no fleet" in done.stderr
    assert "starting supervisord" not in done.stdout
