"""The facts a figure depends on: cores, load, broker, interpreter, package versions."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import asdict
from importlib import metadata
from typing import Any

from kombu import Connection

from bench.harness import LAZY_QUEUES, ROOT, Sizes

PACKAGES = ("celery", "kombu", "amqp", "dramatiq", "pika", "flask", "gunicorn", "prometheus-client", "matplotlib")


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _broker(url: str = "amqp://guest:guest@127.0.0.1:5672//") -> dict[str, str]:
    with Connection(url) as connection:
        properties = connection.connection.server_properties
    return {key: str(properties.get(key, "?")) for key in ("product", "version", "platform")}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def machine_facts(sizes_name: str, sizes: Sizes, overrides: dict[str, str]) -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _git_commit(),
        "run": sizes_name,
        "sizes": asdict(sizes),
        "overrides": overrides,
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_end": load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "rabbitmq": {**_broker(), "policy": asdict(LAZY_QUEUES)},
        "packages": {name: _version(name) for name in PACKAGES},
    }
