"""Reading a worker's /metrics the way Prometheus does, and a private fleet per test module."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from fleet.pools import POOLS
from fleet.testing.broker import Vhost
from fleet.testing.ports import free_port_block


@dataclass(frozen=True)
class Scrape:
    """One scrape: sample name -> [(labels, value)]."""

    samples: dict[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def of(cls, port: int) -> Scrape:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        response.raise_for_status()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        return sum(
            value
            for sample_labels, value in self.samples.get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def series(self, name: str) -> list[dict[str, str]]:
        return [labels for labels, _ in self.samples.get(name, [])]

    def __repr__(self) -> str:  # failures print this; the samples would be thousands of lines
        nonzero = {name: n for name, rows in self.samples.items() if (n := sum(v for _, v in rows))}
        return f"Scrape(totals of non-zero samples: {nonzero})"


def wait_for_scrape(port: int, done: Callable[[Scrape], bool], timeout: float = 120) -> Scrape:
    """Scrape until ``done`` holds; return that scrape."""
    deadline = time.monotonic() + timeout
    last: Scrape | None = None
    while time.monotonic() < deadline:
        try:
            last = Scrape.of(port)
            if done(last):
                return last
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise AssertionError(f"scrape of :{port} never satisfied the condition; last: {last}")


@contextmanager
def private_fleet(fleet_env: Mapping[str, str], tmp: Path) -> Iterator[dict[str, str]]:
    """An environment with its own vhost, metrics ports and metrics directory, removed afterwards."""
    vhost = Vhost().create()
    try:
        yield {
            **fleet_env,
            "CELERY_BROKER_URL": vhost.url,
            "FLEET_METRICS_PORT": str(free_port_block(sum(spec.replicas for spec in POOLS.values()))),
            "FLEET_METRICS_DIR": str(tmp / "metrics"),
        }
    finally:
        vhost.delete()
