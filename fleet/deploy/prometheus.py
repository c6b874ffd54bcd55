"""``deploy/prometheus``: the scrape config for a fleet on one host and the alert rules.

Every worker process has its own metrics port (``fleet.pools.metrics_port``);
the targets are derived here so ``prometheus.yml`` never drifts from the pools,
and the per-queue and per-pool rules of ``alerts.yml`` come from the same specs
(:mod:`fleet.deploy.alerts`). ``fleet render prometheus`` writes both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fleet.deploy.files import GENERATED
from fleet.deploy.values import VALUES
from fleet.pools import POOLS, beat_metrics_port, metrics_port

WORKERS_JOB = "fleet-workers"
API_JOB = "fleet-api"
BEAT_JOB = "fleet-beat"


RULES_FILE = "alerts.yml"
SCRAPE_FILE = "prometheus.yml"


def worker_targets(base_port: int, host: str = VALUES.prometheus.host) -> dict[str, list[str]]:
    """pool -> ``host:port`` of each of its worker processes."""
    return {
        name: [f"{host}:{metrics_port(base_port, name, index)}" for index in range(spec.replicas)]
        for name, spec in POOLS.items()
    }


def scrape_config(
    base_port: int = VALUES.metrics_port,
    api_target: str | None = f"{VALUES.prometheus.host}:{VALUES.api_port}",
    interval: str = VALUES.prometheus.interval,
    rule_files: Sequence[str] = (RULES_FILE,),
    host: str = VALUES.prometheus.host,
    targets: dict[str, list[str]] | None = None,
) -> str:
    """The config as YAML text (flow lists are JSON, which YAML reads as is)."""
    targets = targets if targets is not None else worker_targets(base_port, host)
    lines = [
        "# " + GENERATED.format(target="prometheus"),
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


def render_prometheus() -> dict[str, str]:
    """``deploy/prometheus``: the scrape config and the alert rules (their tests/ stay hand-written)."""
    from fleet.deploy.alerts import alert_rules

    return {RULES_FILE: alert_rules(), SCRAPE_FILE: scrape_config()}
