"""Real fleet processes (workers, beat, API) started the way operators start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

FLEET = str(Path(sys.executable).with_name("fleet"))


class FleetProcess:
    """One ``fleet ...`` subprocess with its output in a log file."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FleetProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.argv} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the log of {self.argv} within {timeout}s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 60) -> int | None:
        """TERM to the main process (a warm shutdown for Celery), KILL the group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the whole process group, children included."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


def launch_worker(
    pool: str, env: Mapping[str, str], log_dir: Path, *flags: str, index: int | None = None
) -> FleetProcess:
    """Start ``fleet worker <pool>`` without waiting for it."""
    argv = [FLEET, "worker", pool, *flags]
    if index is not None:
        argv += ["--index", str(index)]
    name = f"worker-{pool}{'' if index is None else f'-{index}'}"
    return FleetProcess(argv, env, log_dir / f"{name}-{time.time_ns()}.log").start()


def start_worker(
    pool: str, env: Mapping[str, str], log_dir: Path, *flags: str, index: int | None = None
) -> FleetProcess:
    """Start ``fleet worker <pool>`` and wait until Celery says the node is ready."""
    process = launch_worker(pool, env, log_dir, *flags, index=index)
    process.wait_for_log(" ready.", timeout=90)
    return process


def start_workers(pools: Sequence[str], env: Mapping[str, str], log_dir: Path) -> dict[str, FleetProcess]:
    """One worker per pool, started together (they boot in parallel), each waited for."""
    workers = {pool: launch_worker(pool, env, log_dir) for pool in pools}
    try:
        for worker in workers.values():
            worker.wait_for_log(" ready.", timeout=120)
    except BaseException:
        for worker in workers.values():
            worker.stop()
        raise
    return workers
