"""The Prometheus scrape config for a fleet on one host, rendered from the pool specs.

Every worker process has its own metrics port (``fleet.pools.metrics_port``);
the targets are derived here so ``deploy/prometheus/prometheus.yml`` never
drifts from the pools. ``python -m fleet.metrics.prometheus`` prints it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fleet.pools import POOLS, beat_metrics_port, metrics_port

WORKERS_JOB = "fleet-workers"
API_JOB = "fleet-api"
BEAT_JOB = "fleet-beat"


def worker_targets(base_port: int, host: str = "127.0.0.1") -> dict[str, list[str]]:
    """pool -> ``host:port`` of each of its worker processes."""
    return {
        name: [f"{host}:{metrics_port(base_port, name, index)}" for index in range(spec.replicas)]
        for name, spec in POOLS.items()
    }


def scrape_config(
    base_port: int = 9808,
    api_target: str | None = "127.0.0.1:5000",
    interval: str = "15s",
    rule_files: Sequence[str] = ("alerts.yml",),
    host: str = "127.0.0.1",
    targets: dict[str, list[str]] | None = None,
) -> str:
    """The config as YAML text (flow lists are JSON, which YAML reads as is)."""
    targets = targets if targets is not None else worker_targets(base_port, host)
    lines = [
        "# Rendered from fleet/pools.py by `python -m fleet.metrics.prometheus`; a test keeps it in step.",
        "global:",
        f"  scrape_interval: {interval}",
        f"  evaluation_interval: {interval}",
        "rule_files:",
        *(f"  - {json.dumps(path)}" for path in rule_files),
        "scrape_configs:",
        f"  - job_name: {WORKERS_JOB}",
        "    honor_labels: true  # workers label their own series with their pool; targets add it to the rest",
        "    static_configs:",
    ]
    for pool, addresses in targets.items():
        lines += [f"      - targets: {json.dumps(addresses)}", f"        labels: {{pool: {pool}}}"]
    beat_target = f"{host}:{beat_metrics_port(base_port)}"
    lines += [f"  - job_name: {BEAT_JOB}", "    static_configs:", f"      - targets: {json.dumps([beat_target])}"]
    if api_target:
        lines += [f"  - job_name: {API_JOB}", "    static_configs:", f"      - targets: {json.dumps([api_target])}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(scrape_config(), end="")
