"""Pools and workers: each pool's spec, each worker's node, concurrency, active and reserved
tasks (remote control ``inspect``) and the age of its heartbeat file (fleet.worker.health)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from fleet.pools import POOLS, PoolSpec
from fleet.worker.health import health_dir


def heartbeat_ages(var_dir: Path) -> dict[str, float]:
    """Seconds since each node's heartbeat under ``var_dir`` (workers sharing this machine's var/)."""
    now = time.time()
    ages = {}
    for path in health_dir(var_dir).glob("*.heartbeat"):
        try:
            ages[path.name.removesuffix(".heartbeat")] = round(now - path.stat().st_mtime, 1)
        except FileNotFoundError:  # the worker stopped while we looked
            continue
    return ages


def pool_of_node(node: str) -> str | None:
    """``email-2@host`` -> ``email`` (fleet's node names, fleet.worker.run.node_name)."""
    name = node.partition("@")[0]
    for pool in sorted(POOLS, key=len, reverse=True):
        if name == pool or name.startswith(f"{pool}-"):
            return pool
    return None


def unacked_per_queue(active: dict[str, Any], reserved: dict[str, Any]) -> dict[str, int]:
    """Messages the workers hold per queue (running or reserved): RabbitMQ's unacked, as they see it."""
    counts: Counter[str] = Counter()
    for replies in (active, reserved):
        for requests in replies.values():
            for request in requests or []:
                counts[(request.get("delivery_info") or {}).get("routing_key", "?")] += 1
    return dict(counts)


def spec_row(spec: PoolSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.pool,
        "queues": list(spec.queues),
        "concurrency": spec.concurrency,
        "prefetch_multiplier": spec.prefetch_multiplier,
        "replicas": spec.replicas,
        "time_limit": spec.time_limit,
    }


def report(
    specs: list[PoolSpec],
    stats: dict[str, Any],
    active: dict[str, Any],
    reserved: dict[str, Any],
    ages: dict[str, float],
) -> list[dict[str, Any]]:
    """Per pool its spec and its workers (those that answered, and those with only a heartbeat)."""
    nodes = sorted(set(stats) | set(active) | set(reserved) | set(ages))
    pools = []
    for spec in specs:
        workers = []
        for node in (node for node in nodes if pool_of_node(node) == spec.name):
            concurrency = ((stats.get(node) or {}).get("pool") or {}).get("max-concurrency")
            workers.append(
                {
                    "node": node,
                    "answered": node in stats,
                    "concurrency": concurrency if isinstance(concurrency, int) else None,
                    "active": len(active.get(node) or []),
                    "reserved": len(reserved.get(node) or []),
                    "heartbeat_age": ages.get(node),
                }
            )
        pools.append({**spec_row(spec), "workers": workers})
    return pools
