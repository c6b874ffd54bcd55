"""``deploy/prometheus/alerts.yml``: the alert rules, with every queue and pool taken from the specs.

The rules are written once in ``alerts.yml.in`` beside this module; what names a queue or a pool
(the per-queue SLO records, which queues page, the absent-pool check) is filled in here, so a queue
added to queues.py and a pool spec is watched like the others. promtool's unit tests
(deploy/prometheus/tests/alerts_test.yml) stay hand-written: they are the rules' specification.
"""

from __future__ import annotations

from pathlib import Path

from fleet.deploy.prometheus import WORKERS_JOB
from fleet.pools import POOLS
from queues import WORK_QUEUES

TEMPLATE = Path(__file__).with_name("alerts.yml.in")
HEADER = "Rendered by `fleet render prometheus` from fleet/deploy/alerts.yml.in and fleet/pools.py; do not edit."


def queue_wait_slos() -> dict[str, int]:
    """queue -> p95 wait SLO in seconds, from the pool that consumes it, in queues.py's order."""
    slos = {queue: spec.queue_wait_slo_s for spec in POOLS.values() for queue in spec.queues}
    return {queue: slos[queue] for queue in WORK_QUEUES if queue in slos}


def paging_queues() -> list[str]:
    """The queues with the tightest SLO: a breach there pages (critical) within 2 minutes."""
    slos = queue_wait_slos()
    tightest = min(slos.values())
    return [queue for queue, slo in slos.items() if slo == tightest]


def _matcher(queues: list[str], negate: bool) -> str:
    if len(queues) == 1:
        return f'{"!=" if negate else "="}"{queues[0]}"'
    return f'{"!~" if negate else "=~"}"{"|".join(queues)}"'


def alert_rules() -> str:
    """The rules file: the template with its @NAME@ markers filled in."""
    paging = paging_queues()
    pools = [name for name, spec in POOLS.items() if set(spec.queues) & set(paging)]
    records = "\n".join(
        f"      - record: fleet:queue_wait_slo_seconds\n        labels: {{queue: {queue}}}\n        expr: vector({slo})"
        for queue, slo in queue_wait_slos().items()
    )
    absent = "\n          or ".join(f'absent(up{{job="{WORKERS_JOB}", pool="{pool}"}})' for pool in POOLS)
    fills = {
        "SLO_RECORDS": records,
        "URGENT_MATCH": _matcher(paging, negate=False),
        "OTHER_MATCH": _matcher(paging, negate=True),
        "URGENT": ", ".join(paging),
        "URGENT_POOLS": ", ".join(pools),
        "POOL_ABSENT": f"          {absent}",
        "WORKERS_JOB": WORKERS_JOB,
    }
    _, _, text = TEMPLATE.read_text().split("\n", 2)  # the template's own two-line header
    for name, value in fills.items():
        text = text.replace(f"@{name}@", value)
    return f"# {HEADER}\n{text}"
