"""The development stand-ins `make run` starts: an SMTP sink that keeps mail, a gateway that honours
Idempotency-Key; both started as supervisord starts them (`fleet dev ...`) and refused in production."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from fleet.devpeers import mail_dir
from fleet.settings import load_settings
from fleet.tasks.email import SMTPUnreachable, _connect
from fleet.testing.ports import free_port
from fleet.testing.processes import FLEET, FleetProcess
from tests.support.supervised import clean_env


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    return clean_env(
        FLEET_VAR_DIR=str(tmp_path / "var"),
        FLEET_SMTP_HOST="127.0.0.1",
        FLEET_SMTP_PORT=str(free_port()),
        FLEET_PAYMENT_GATEWAY_URL=f"http://127.0.0.1:{free_port()}/payments",
    )


def _serve(what: str, env: dict[str, str], log: Path, ready: str) -> Iterator[FleetProcess]:
    process = FleetProcess([FLEET, "dev", what], env, log).start()
    try:
        process.wait_for_log(ready, timeout=30)
        yield process
    finally:
        assert process.stop(10) == 0, "TERM stops a stand-in cleanly:\n" + process.log()


@pytest.fixture
def smtp_sink(dev_env: dict[str, str], tmp_path: Path) -> Iterator[FleetProcess]:
    yield from _serve("smtp", dev_env, tmp_path / "smtp.log", "listening on")


@pytest.fixture
def gateway(dev_env: dict[str, str], tmp_path: Path) -> Iterator[FleetProcess]:
    yield from _serve("gateway", dev_env, tmp_path / "gateway.log", "charging on")


def test_smtp_sink_keeps_what_it_received(dev_env: dict[str, str], smtp_sink: FleetProcess) -> None:
    settings = load_settings(dev_env)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "fleet@localhost", "ada@example.test", "kept?"
    message.set_content("hello from the demo")
    with _connect(settings) as smtp:  # the task's own connection path
        smtp.send_message(message)
    deadline = time.monotonic() + 10
    while not list(mail_dir(settings).glob("*.eml")):
        assert time.monotonic() < deadline, smtp_sink.log()
        time.sleep(0.05)
    (kept,) = mail_dir(settings).glob("*.eml")
    received = message_from_bytes(kept.read_bytes())
    assert received["To"] == "ada@example.test" and received["Subject"] == "kept?"
    assert received.get_payload().strip() == "hello from the demo"


def test_a_failed_smtp_connection_names_the_settings(dev_env: dict[str, str]) -> None:
    settings = load_settings(dev_env)  # nothing listens on its port
    with pytest.raises(SMTPUnreachable) as failure:
        _connect(settings)
    assert f"FLEET_SMTP_HOST=127.0.0.1 FLEET_SMTP_PORT={settings.smtp_port}" in str(failure.value)
    assert isinstance(failure.value, ConnectionError), "still a transient error: the task retries it"


def test_gateway_honours_idempotency_key(dev_env: dict[str, str], gateway: FleetProcess) -> None:
    url = dev_env["FLEET_PAYMENT_GATEWAY_URL"]
    body = {"payment_id": "pay-1", "amount": "9.99", "currency": "EUR"}
    first = requests.post(url, json=body, headers={"Idempotency-Key": "pay-1"}, timeout=5)
    assert first.status_code == 200 and first.json()["status"] == "succeeded", first.text
    again = requests.post(url, json=body, headers={"Idempotency-Key": "pay-1"}, timeout=5)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["charge_id"] == first.json()["charge_id"], "a retry never charges twice"
    other = requests.post(url, json=body, headers={"Idempotency-Key": "pay-2"}, timeout=5)
    assert other.json()["charge_id"] != first.json()["charge_id"]
    reused = requests.post(url, json={**body, "amount": "5"}, headers={"Idempotency-Key": "pay-1"}, timeout=5)
    assert reused.status_code == 409
    assert requests.post(url, json=body, timeout=5).status_code == 400, "no key, no charge"
    bad = requests.post(url, json={**body, "amount": "-1"}, headers={"Idempotency-Key": "pay-3"}, timeout=5)
    assert bad.status_code == 422, "a refusal the task does not retry"


@pytest.mark.parametrize("what", ["smtp", "gateway"])
def test_stand_ins_refuse_production(dev_env: dict[str, str], what: str) -> None:
    env = {
        **dev_env,
        "FLEET_ENV": "production",
        "FLEET_API_TOKEN": "t",
        "CELERY_BROKER_URL": "amqp://fleet:secret@127.0.0.1:5672//",
    }
    done = subprocess.run([FLEET, "dev", what], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "does not run when FLEET_ENV=production" in done.stderr


@pytest.mark.parametrize(("environment", "conf"), [("development", "fleet-dev.conf"), ("production", "fleet.conf")])
def test_make_run_picks_the_config_of_its_environment(environment: str, conf: str) -> None:
    env = clean_env(FLEET_ENV=environment, FLEET_API_TOKEN="t", CELERY_BROKER_URL="amqp://fleet:s@127.0.0.1//")
    done = subprocess.run([FLEET, "dev", "conf"], env=env, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == f"deploy/supervisor/{conf}"
