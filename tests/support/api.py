"""A live ``fleet api`` (gunicorn) for tests, and a client that talks to it over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

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
