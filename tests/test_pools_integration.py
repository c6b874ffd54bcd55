"""Every task, sent by name, lands in its routed queue and runs on that queue's pool only."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.celery_app import FleetCelery
from fleet.pools import POOLS
from routing import queue_for
from tests.support import procfs
from tests.support.peers import HTTPPeer

pytestmark = pytest.mark.usefixtures("fleet_workers")


#: task name -> (args, kwargs) that make it succeed against the run's loopback peers
def _calls(http_peer: HTTPPeer, csv_file: Path) -> dict[str, tuple[tuple, dict]]:
    http_peer.script("/payments", [200], {"charged": True})
    http_peer.script("/sync", [200], [{"id": 1}, {"id": 2}])
    return {
        "tasks.send_email": (("routed@example.test", "hello", "body"), {}),
        "tasks.send_bulk_emails": ((["bulk-routed@example.test"], "hi", "body"), {}),
        "tasks.process_data": ((7,), {"rows": 100, "step_delay": 0}),
        "tasks.generate_report": (("sales",), {"rows": 10}),
        "tasks.call_external_api": ((http_peer.script("/routed-api", [200]),), {}),
        "tasks.send_webhook": ((http_peer.script("/routed-hook", [200]), {"event": "x"}), {}),
        "tasks.process_payment": (("pay-routed-1", "12.50", "card", "EUR"), {}),
        "tasks.cleanup_expired_sessions": ((), {}),
        "tasks.sync_external_data": ((), {}),
        "tasks.generate_daily_report": ((), {}),
        "tasks.send_weekly_digest": ((), {}),
        "tasks.generate_monthly_report": ((), {}),
        "tasks.fetch_data": ((3, 5), {}),
        "tasks.validate_data": (({"source_id": 3, "records": [{"id": 1, "value": 2.0}]},), {}),
        "tasks.transform_data": (({"source_id": 3, "records": [{"id": 1, "value": 2.0}]},), {}),
        "tasks.save_data": (({"source_id": 3, "records": [], "total_cents": 0},), {}),
        "tasks.aggregate_results": (([{"source_id": 3, "records": 1, "invalid": 0, "total_cents": 5}],), {}),
        "tasks.long_running_task": ((0,), {}),
        "tasks.add": ((2, 3), {}),
        "tasks.my_complex_task": ((), {}),
        "tasks.import_csv": ((str(csv_file),), {}),
        "tasks.idempotent_update": (("routed", 1), {}),
        "tasks.focused_task": ((1,), {}),
        "tasks.high_priority": (({"a": 1},), {}),
        "tasks.low_priority": (({"a": 1},), {}),
        "tasks.time_limited": (({"steps": 1},), {}),
        "tasks.graceful_failure": (({"values": [1]},), {}),
    }


def test_every_task_runs_on_its_routed_pool_only(celery_app: FleetCelery, http_peer: HTTPPeer) -> None:
    csv_file = celery_app.fleet_settings.var_dir / "routed.csv"
    csv_file.write_text("id,name\n1,a\n")
    calls = _calls(http_peer, csv_file)
    registered = {name for name in celery_app.tasks if name.startswith("tasks.")}
    assert registered == set(calls), "every registered task is exercised here"
    results = {name: celery_app.send_task(name, args, kwargs) for name, (args, kwargs) in calls.items()}
    for name, result in results.items():
        result.get(timeout=60)
        queue = queue_for(name)
        assert result.state == "SUCCESS", name
        assert result.queue == queue, f"{name} was delivered from {result.queue}, routed to {queue}"
        assert result.worker.startswith(f"{queue}@"), f"{name} ran on {result.worker}, not the {queue} pool"


def test_every_process_and_thread_of_a_pool_runs_at_its_spec_niceness(fleet_workers: dict) -> None:
    assert {spec.nice for spec in POOLS.values()} != {0}, "the bulk pools yield the CPU to the latency pools"
    for pool, worker in fleet_workers.items():
        spec = POOLS[pool]
        processes = procfs.tree(worker.pid)
        if spec.pool == "prefork":
            assert len(processes) > spec.concurrency, f"{pool}: the prefork children are in the tree"
        for pid in processes:
            assert set(procfs.thread_nices(pid).values()) == {spec.nice}, f"{pool}: process {pid} not at {spec.nice}"
        # each test worker leads its own session, so its autogroup is its own (fleet.worker.niceness)
        assert procfs.autogroup_nice(worker.pid) in (None, spec.nice), f"{pool}: autogroup not at {spec.nice}"
