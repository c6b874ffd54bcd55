"""Within high_priority, a higher-priority message published later runs first."""

from __future__ import annotations

import time
from pathlib import Path

from fleet.celery_app import FleetCelery
from fleet.testing.processes import start_worker
from tests.support.peers import HTTPPeer


def test_later_higher_priority_message_runs_before_waiting_ones(
    private_env: dict[str, str], private_app: FleetCelery, http_peer: HTTPPeer, log_dir: Path
) -> None:
    http_peer.script("/payments", [200])
    worker = start_worker("high_priority", private_env, log_dir, "--concurrency", "1")
    try:
        # Occupy the only process, so everything published next waits in the queue.
        blocker = private_app.send_task(
            "tasks.process_data", (1,), {"rows": 10, "step_delay": 0.5}, queue="high_priority"
        )
        deadline = time.monotonic() + 30
        while blocker.state not in ("STARTED", "PROGRESS") and time.monotonic() < deadline:
            time.sleep(0.05)
        low = [
            private_app.send_task("tasks.process_payment", (f"low-{n}", "1.00", "card", "EUR"), priority=1)
            for n in range(4)
        ]
        high = private_app.send_task("tasks.process_payment", ("high-0", "1.00", "card", "EUR"), priority=9)
        for result in [*low, high]:
            result.get(timeout=60)
    finally:
        worker.stop()
    order = [hit.body["order_id"] for hit in http_peer.hits_for("/payments")]
    assert order[0] == "high-0", order
    assert sorted(order[1:]) == [f"low-{n}" for n in range(4)]
