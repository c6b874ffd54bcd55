"""The API under test: a live ``fleet api`` (gunicorn) over real HTTP, or the Flask app in process.

:class:`ApiServer` is for what needs gunicorn and a broker (publishing, 503s, gunicorn's own
414/431); :func:`pure_api` is the same app through Flask's test client with a
:class:`RecordingPublisher`, for validation and error shapes in the fast tier (no service).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from fleet.api.schemas import Error
from fleet.settings import load_settings
from fleet.testing.ports import free_port
from fleet.testing.processes import FLEET, FleetProcess


class ApiServer:
    """``fleet api`` on a free loopback port, started the way operators start it."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, token: str = "", **extra_env: str) -> None:
        self.port = free_port()
        self.token = token
        self.env = {
            **env,
            "FLEET_API_BIND": f"127.0.0.1:{self.port}",
            "FLEET_API_TOKEN": token,
            "FLEET_API_WORKERS": "2",
            "FLEET_API_THREADS": "4",
            **extra_env,
        }
        self.process = FleetProcess([FLEET, "api"], self.env, log_dir / f"api-{self.port}-{time.time_ns()}.log")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self, timeout: float = 60) -> ApiServer:
        self.process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url("/healthz"), timeout=2).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
                pass
            if self.process.proc is not None and self.process.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"fleet api did not come up on {self.base_url}:\n{self.process.log()[-3000:]}")

    def stop(self) -> None:
        self.session.close()
        self.process.stop()

    # -- HTTP --------------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.get(self.url(path), **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.post(self.url(path), json=json, **kwargs)

    def wait_for_state(
        self, task_id: str, states: set[str], timeout: float = 60, seen: list[str] | None = None
    ) -> dict[str, Any]:
        """Poll the status endpoint until the state is one of ``states``; record every state seen."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = self.get(f"/api/task-status/{task_id}")
            assert response.status_code == 200, response.text
            body = response.json()
            if seen is not None and (not seen or seen[-1] != body["state"]):
                seen.append(body["state"])
            if body["state"] in states:
                return body
            time.sleep(0.05)
        raise AssertionError(f"{task_id} did not reach {states} within {timeout}s; last: {body}")


# -- in process ------------------------------------------------------------------------


#: Nothing listens on port 1: a pure test that reached for the broker would fail, not publish.
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"


class RecordingPublisher:
    """Stands in for fleet.publish.Publisher: records each publish it is asked for, sends nothing."""

    def __init__(self) -> None:
        self.sends: list[Any] = []

    def run(self, send: Any, timeout: float | None = None) -> None:
        self.sends.append(send)

    def publish(self, messages: Any, timeout: float | None = None) -> None:
        self.sends.append(messages)


class PureApi:
    """The Flask app in process with a recording publisher, and the bearer token on every call."""

    def __init__(self, client: FlaskClient, publisher: RecordingPublisher, token: str) -> None:
        self.client = client
        self.publisher = publisher
        self.auth = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> TestResponse:
        return self.client.get(path, headers={**self.auth, **(headers or {})})

    def post(
        self, path: str, json: Any = None, data: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> TestResponse:
        body = {"data": data} if data is not None else {"json": json}
        return self.client.post(path, headers={**self.auth, **(headers or {})}, **body)


def pure_api(var_dir: Path, token: str, **env: str) -> PureApi:
    """``create_app`` on settings of its own (no broker reachable), its publisher a recorder."""
    settings = load_settings(
        {"FLEET_VAR_DIR": str(var_dir), "FLEET_API_TOKEN": token, "CELERY_BROKER_URL": UNREACHABLE_BROKER, **env}
    )
    app = create_app(settings)
    publisher = RecordingPublisher()
    app.extensions["fleet.api"].publisher = publisher  # ApiState.publisher: the one place the API publishes
    return PureApi(app.test_client(), publisher, token)


def response_json(response: requests.Response | TestResponse) -> Any:
    return response.json() if isinstance(response, requests.Response) else response.get_json()


def assert_error(response: requests.Response | TestResponse, status: int, code: str, field: str | None = None) -> dict:
    """The response is ``status`` with the documented Error shape (and names ``field``)."""
    text = response.text if isinstance(response, requests.Response) else response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.headers["Content-Type"].startswith("application/json")
    body = Error.model_validate(response_json(response)).model_dump()
    assert body["status"] == status and body["error"] == code, body
    if field is not None:
        assert field in [detail["field"] for detail in body["details"]], body
    return body
