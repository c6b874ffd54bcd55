"""A fleet run by a real supervisord from the rendered config, and a Celery client for another vhost."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from fleet.deploy.supervisor import SUPERVISOR_FILE
from fleet.deploy.supervisor_auth import ensure_auth
from fleet.testing.processes import FleetProcess

BIN = Path(sys.executable).parent


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without fleet/Celery settings, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLEET_", "CELERY_"))}
    env.update(settings)
    return env


class Supervisor:
    """``supervisord``/``supervisorctl`` on a checkout's rendered config (FLEET_HOME, FLEET_VAR_DIR in ``env``)."""

    def __init__(self, home: Path, env: Mapping[str, str], conf: str = SUPERVISOR_FILE) -> None:
        self.conf = home / "deploy" / "supervisor" / conf
        self.env = {"FLEET_USER": getpass.getuser(), **env}
        self.var = Path(self.env["FLEET_VAR_DIR"])
        self.ctl_conf = ensure_auth(self.var)  # what `make run` does before starting supervisord
        argv = [str(BIN / "supervisord"), "-c", str(self.conf)]
        self.process = FleetProcess(argv, self.env, self.var / "supervisord.out")

    def start(self) -> Supervisor:
        (self.var / "log").mkdir(parents=True, exist_ok=True)
        self.process.start()
        return self

    def ctl(self, *args: str, timeout: float = 700) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "supervisorctl"), "-c", str(self.ctl_conf), *args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)

    def states(self) -> dict[str, str]:
        """``group:process`` -> state, e.g. ``{"fleet:email-0": "RUNNING"}`` (empty while not answering)."""
        lines = self.ctl("status", timeout=30).stdout.splitlines()
        return {parts[0]: parts[1] for parts in (line.split() for line in lines) if len(parts) >= 2 and ":" in parts[0]}

    def wait_running(self, expected: int, timeout: float = 120) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if len(states) == expected and set(states.values()) == {"RUNNING"}:
                return states
            assert self.process.proc is not None and self.process.proc.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, f"not all RUNNING within {timeout}s: {states}\n{self.log()[-3000:]}"
            time.sleep(0.5)

    def log(self) -> str:
        path = self.var / "log" / "supervisord.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def program_log(self, process: str) -> str:
        path = self.var / "log" / f"{process}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 120) -> int | None:
        """TERM to supervisord: every program gets its warm stop; KILL the group if it hangs."""
        return self.process.stop(timeout)


def wait_http_ok(url: str, timeout: float) -> float:
    """Seconds until ``url`` answers 200."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        assert time.monotonic() - started < timeout, f"{url} did not answer 200 within {timeout}s"
        time.sleep(0.3)
