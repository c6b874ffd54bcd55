"""Nothing secret is logged: broker and SMTP passwords never reach a worker's output."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote, unquote

from fleet.testing.broker import rabbitmqctl
from fleet.testing.processes import start_worker
from tests.support.apps import app_for


def test_passwords_stay_out_of_worker_logs(private_env: dict[str, str], log_dir: Path) -> None:
    user, password, smtp_password = f"fleet-{secrets.token_hex(4)}", secrets.token_hex(16), secrets.token_hex(16)
    vhost_name = private_env["CELERY_BROKER_URL"].rsplit("/", 1)[1]
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", unquote(vhost_name), user, ".*", ".*", ".*")
        env = {
            **private_env,
            "CELERY_BROKER_URL": f"amqp://{user}:{password}@127.0.0.1:5672/{vhost_name}",
            "FLEET_SMTP_USER": "mailer",
            "FLEET_SMTP_PASSWORD": smtp_password,
            "FLEET_LOG_LEVEL": "debug",
        }
        worker = start_worker("default", env, log_dir)
        try:
            with app_for(env) as app:
                assert app.send_task("tasks.fetch_data", (1, 1)).get(timeout=30)["source_id"] == 1
        finally:
            worker.stop()
    finally:
        rabbitmqctl("delete_user", user)
    log = worker.log()
    assert f"{user}:**@" in log, "the broker URL is shown, masked"
    assert password not in log and quote(password) not in log
    assert smtp_password not in log
