"""Scoped tokens, the pause plan, the console's login and CSRF, and the 501 for a Redis backend
(pure: the app in process on an unreachable broker; nothing here needs a service)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app import create_app
from fleet.api.auth import identify
from fleet.console.session import CSRF_COOKIE, LOGIN_COOKIE
from fleet.settings import SettingsError, load_settings
from fleet.worker.pausing import plan
from tests.support.api import UNREACHABLE_BROKER

pytestmark = pytest.mark.pure

TOKENS = "ops:operate:op-secret,viewer:read:read-secret,client:enqueue:enq-secret"


def _client(tmp_path: Path, **env: str) -> FlaskClient:
    settings = load_settings({"FLEET_VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": UNREACHABLE_BROKER, **env})
    return create_app(settings).test_client()


def test_tokens_parse_with_their_scopes_and_bad_entries_are_named() -> None:
    settings = load_settings({"FLEET_API_TOKENS": "ops:operate:a:b:c, viewer:read:r", "FLEET_API_TOKEN": "single"})
    assert identify(settings, "a:b:c").name == "ops" and identify(settings, "a:b:c").scopes == {"operate", "read"}
    assert identify(settings, "r").scopes == {"read"}
    assert identify(settings, "single").scopes == {"read", "operate", "enqueue"}, "FLEET_API_TOKEN may do everything"
    assert identify(settings, "a:b") is None and identify(settings, "") is None and identify(settings, None) is None
    assert "token=" not in repr(settings.api_tokens[0]) and "a:b:c" not in repr(settings.api_tokens)
    for bad, words in (
        ("ops:admin:x", "scope 'admin'"),
        ("ops:read", "name:scope:token"),
        ("a:read:x,a:read:y", "own name"),
    ):
        with pytest.raises(SettingsError, match=words):
            load_settings({"FLEET_API_TOKENS": bad})


def test_production_starts_with_scoped_tokens_alone() -> None:
    env = {"FLEET_ENV": "production", "CELERY_BROKER_URL": "amqps://svc:pw@mq:5671/prod"}
    with pytest.raises(SettingsError, match="FLEET_API_TOKENS or FLEET_API_TOKEN must be set"):
        load_settings(env)
    assert load_settings({**env, "FLEET_API_TOKENS": "ops:operate:x"}).is_production


def test_scopes_401_and_403(tmp_path: Path) -> None:
    client = _client(tmp_path, FLEET_API_TOKENS=TOKENS)
    replay = "/api/ops/dead-letters/default/replay"
    assert client.post(replay, json={"all": True}).status_code == 401
    assert client.post(replay, json={"all": True}, headers={"Authorization": "Bearer read-secret"}).status_code == 403
    assert client.get("/api/ops/tasks", headers={"Authorization": "Bearer enq-secret"}).status_code == 403
    refused = client.post("/api/send-email", json={}, headers={"Authorization": "Bearer read-secret"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    # an enqueue token enqueues (422 here: the body is empty, but it got past auth)
    assert client.post("/api/send-email", json={}, headers={"Authorization": "Bearer enq-secret"}).status_code == 422
    assert client.get("/healthz").status_code == 200, "probes stay open"


def test_without_tokens_development_reads_openly_but_acts_only_from_this_machine(tmp_path: Path) -> None:
    client = _client(tmp_path)
    body = {"task_ids": ["x"], "all": True}  # invalid on purpose: past auth it is a 422, nothing happens
    assert client.post("/api/ops/dead-letters/default/replay", json=body).status_code == 422
    remote = client.post("/api/ops/dead-letters/default/replay", json=body, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 401 and "only on this machine" in remote.get_json()["message"]


def test_a_redis_result_backend_answers_501_for_the_task_list(tmp_path: Path) -> None:
    client = _client(tmp_path, FLEET_API_TOKENS=TOKENS, CELERY_RESULT_BACKEND="redis://127.0.0.1:1/0")
    response = client.get("/api/ops/tasks", headers={"Authorization": "Bearer read-secret"})
    assert response.status_code == 501, response.get_data(as_text=True)
    assert "needs a SQL result backend" in response.get_json()["message"]


def test_pause_plan_touches_only_the_workers_own_queues() -> None:
    own = frozenset({"email"})
    assert plan(own, {"email"}, {"email"}) == ({"email"}, set())
    assert plan(own, set(), set()) == (set(), {"email"}), "resumed: consume again"
    assert plan(own, set(), {"email", "default"}) == (set(), set())
    assert plan(own, {"email"}, {"default"}) == (set(), set()), "another pool's pause changes nothing here"


def test_console_login_sets_a_strict_httponly_cookie_and_forms_need_csrf(tmp_path: Path) -> None:
    client = _client(tmp_path, FLEET_API_TOKENS=TOKENS)
    assert client.get("/console/").status_code == 302, "not logged in: to the login page"
    page = client.get("/console/login")
    csrf = client.get_cookie(CSRF_COOKIE, path="/console").value
    assert f'value="{csrf}"' in page.get_data(as_text=True)
    assert client.post("/console/login", data={"token": "op-secret"}).status_code == 401, "no CSRF token: refused"
    assert client.post("/console/login", data={"token": "enq-secret", "csrf": csrf}).status_code == 401
    response = client.post("/console/login", data={"token": "op-secret", "csrf": csrf})
    assert response.status_code == 303
    cookie = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith(LOGIN_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    forged = client.post("/console/queues/default/pause", data={"csrf": "forged"})
    assert forged.status_code == 403 and "CSRF" in forged.get_data(as_text=True)
    assert "script-src 'self'" in forged.headers["Content-Security-Policy"]


def test_a_read_token_cannot_cancel_a_task(tmp_path: Path) -> None:
    client = _client(tmp_path, FLEET_API_TOKENS=TOKENS)
    assert client.post("/api/task-cancel/some-id", headers={"Authorization": "Bearer read-secret"}).status_code == 403
