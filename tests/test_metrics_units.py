"""Worker metrics, the pure parts: labels, the archive of exited processes' files, rendered config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery.utils.serialization import UnpickleableExceptionWrapper
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from fleet.deploy.prometheus import scrape_config, worker_targets
from fleet.metrics import archive
from fleet.metrics.fleet_status import pool_of
from fleet.metrics.labels import OTHER, Labeler
from fleet.metrics.setup import MetricsSetupError
from fleet.settings import MULTIPROC_ENV, ROOT

pytestmark = pytest.mark.pure  # the fast tier: no service needed


def test_labels_stay_bounded() -> None:
    labeler = Labeler({"tasks.a"}, max_exception_names=2)
    assert labeler.task("tasks.a") == "tasks.a"
    assert labeler.task("tasks.nobody-registers-this") == OTHER
    assert labeler.queue({"routing_key": "email"}) == "email"
    assert labeler.queue({"routing_key": "email.dlq"}) == OTHER
    assert labeler.queue(None) == OTHER
    assert [labeler.exception(e) for e in (KeyError(), ValueError(), KeyError(), OSError())] == [
        "KeyError",
        "ValueError",
        "KeyError",
        OTHER,  # the cap: a third class name is not minted
    ]
    wrapped = UnpickleableExceptionWrapper("fleet.http", "PermanentHTTPError", ("x",), "PermanentHTTPError('x')")
    assert Labeler(()).exception(wrapped) == "PermanentHTTPError"  # Celery's JSON wrapper is seen through


def _write(path: Path, values: dict[tuple[str, str, str], float]) -> None:
    store = MmapedDict(str(path))
    for (metric, sample, queue), value in values.items():
        store.write_value(mmap_key(metric, sample, ["queue"], [queue], "help"), value, 0.0)
    store.close()


def _totals(directory: Path) -> dict[tuple[str, tuple], float]:
    collector = MultiProcessCollector(None, str(directory))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in collector.collect() for s in m.samples}


def test_exited_processes_fold_into_one_archive_per_type_and_totals_hold(tmp_path: Path) -> None:
    done = ("fleet_tasks_succeeded", "fleet_tasks_succeeded_total", "default")
    bucket = ("fleet_task_runtime_seconds", "fleet_task_runtime_seconds_bucket", "default")
    for pid, count in ((101, 3.0), (102, 4.0), (103, 5.0)):
        _write(tmp_path / f"counter_{pid}.db", {done: count})
        _write(
            tmp_path / f"gauge_livesum_{pid}.db", {("fleet_tasks_in_progress", "fleet_tasks_in_progress", "default"): 1}
        )
    before = _totals(tmp_path)
    assert before[("fleet_tasks_succeeded_total", (("queue", "default"),))] == 12
    for pid in (101, 102):
        assert archive.retire(tmp_path, pid)
    assert not archive.retire(tmp_path, 101)  # already folded: nothing counted twice
    after = _totals(tmp_path)
    assert after[("fleet_tasks_succeeded_total", (("queue", "default"),))] == 12  # never backwards
    assert after[("fleet_tasks_in_progress", (("queue", "default"),))] == 1  # only the live process's gauge
    assert sorted(p.name for p in tmp_path.glob("*.db")) == [
        "counter_103.db",
        "counter_archive.db",
        "gauge_livesum_103.db",
    ]
    # histograms fold bucket by bucket
    _write(tmp_path / "histogram_104.db", {bucket: 2.0})
    _write(tmp_path / "histogram_105.db", {bucket: 5.0})
    archive.retire(tmp_path, 104)
    archive.retire(tmp_path, 105)
    assert sorted(p.name for p in tmp_path.glob("histogram_*")) == ["histogram_archive.db"]
    [(_, value, _, _)] = MmapedDict.read_all_values_from_file(str(tmp_path / "histogram_archive.db"))
    assert value == 7.0


def test_sweep_retires_dead_processes_only(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    key = ("fleet_tasks_started", "fleet_tasks_started_total", "email")
    _write(tmp_path / f"counter_{gone.pid}.db", {key: 2.0})
    _write(tmp_path / f"counter_{os.getpid()}.db", {key: 1.0})
    _write(tmp_path / f"counter_{os.getppid()}.db", {key: 1.0})  # alive, not ours to keep: left alone
    assert archive.sweep(tmp_path, keep={os.getpid()}) == [gone.pid]
    assert archive.file_count(tmp_path) == 3
    assert _totals(tmp_path)[("fleet_tasks_started_total", (("queue", "email"),))] == 4


def test_the_metrics_directory_must_be_set_before_the_worker_metrics_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.metrics.worker import WorkerMetrics

    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with pytest.raises(MetricsSetupError, match="created before"):  # single-process mode: it would undercount
        WorkerMetrics("default", ("default",), ("tasks.add",), Labeler(("tasks.add",)))


def test_committed_scrape_config_is_the_render_of_the_pools() -> None:
    committed = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert committed == scrape_config(), "run `fleet render prometheus` and commit"
    targets = worker_targets(9808)
    ports = [int(address.rsplit(":", 1)[1]) for addresses in targets.values() for address in addresses]
    assert ports == list(range(9808, 9808 + len(ports))), "one port per worker process, none shared"


def test_node_names_map_back_to_their_pool() -> None:
    assert pool_of("email@host") == "email"
    assert pool_of("high_priority-1@host") == "high_priority"
    assert pool_of("celery@host") == "celery"


def _paused_script(source: str, *args: str) -> subprocess.Popen:
    """``python -c source *args``, once it printed ``args[-1]``: it then waits for a line on stdin."""
    script = subprocess.Popen(
        [sys.executable, "-c", source, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert script.stdout is not None and script.stdin is not None
    assert script.stdout.readline().strip() == args[-1]
    return script


RECEIVED_FLUSH = """
import sys, threading, types
from pathlib import Path
from fleet.metrics.setup import prepare_directory
prepare_directory(Path(sys.argv[1]))
from fleet.metrics.labels import Labeler
from fleet.metrics.worker import WorkerMetrics
metrics = WorkerMetrics("default", ["default"], ["tasks.a"], Labeler(["tasks.a"]))
def received(name):
    metrics.on_received(request=types.SimpleNamespace(delivery_info={"routing_key": "default"}, name=name))
for _ in range(3):
    received("tasks.a")
received("tasks.unknown")
received(["unhashable"])  # a malformed name: written at once
print(sys.argv[2], flush=True)
sys.stdin.readline()
flushers = [threading.Thread(target=metrics.flush_received) for _ in range(4)]
for thread in flushers:
    thread.start()
for thread in flushers:
    thread.join()
received("tasks.a")
metrics.flush_received()
metrics.flush_received()
"""


def test_messages_received_are_counted_in_memory_and_written_once_by_any_flush(tmp_path: Path) -> None:
    """``fleet_tasks_received`` is written by the exporter's tick and before every scrape, never twice."""
    script = _paused_script(RECEIVED_FLUSH, str(tmp_path), "counted")

    def received(task: str) -> float:
        return _totals(tmp_path).get(("fleet_tasks_received_total", (("queue", "default"), ("task", task))), 0)

    assert (received("tasks.a"), received(OTHER)) == (0, 1)  # only the malformed one so far
    script.stdin.write("\n")
    script.stdin.close()
    assert script.wait(timeout=30) == 0
    assert (received("tasks.a"), received(OTHER)) == (4, 2)


RUNS = """
import sys, time, types
from pathlib import Path
from fleet.metrics.setup import prepare_directory
prepare_directory(Path(sys.argv[1]))
from fleet.metrics import worker
from fleet.metrics.stamp import PUBLISHED_AT_HEADER

class Clock:  # the runs' runtimes, chosen: below, on and between bucket bounds, past the last one
    now = 1000.0
    def monotonic(self): return self.now
    def time(self): return time.time()
clock = worker.time = Clock()
tally = sys.argv[2] == "tally"
metrics = worker.WorkerMetrics("default", ["default"], ["tasks.a"], worker.Labeler(["tasks.a"]), tally_runs=tally)
task = types.SimpleNamespace(name="tasks.a")
def request(waited, eta=None):
    fields = {"delivery_info": {"routing_key": "default"}, "eta": eta}
    if waited is not None:
        fields[PUBLISHED_AT_HEADER] = time.time() - waited
    return types.SimpleNamespace(**fields)
runs = [(0.001, "SUCCESS", 0.002), (0.005, "SUCCESS", None), (0.3, "FAILURE", 7.0), (4000.0, "SUCCESS", 0.02),
        (2.0, None, 0.4), (1.0, "RETRY", None)]
for number, (runtime, state, waited) in enumerate(runs):
    r = request(waited, eta="2026-01-01T00:00:00" if number == 1 else None)
    metrics.run_started(task, r, f"id-{number}")
    clock.now += runtime
    metrics.run_ended(task, r, f"id-{number}", state)
metrics.run_started(task, request(None), "still-running")
print(sys.argv[2], flush=True)
sys.stdin.readline()
metrics.flush()
"""


def _runs_written(directory: Path, mode: str) -> tuple[dict, dict]:
    """The series a worker's metrics write for the same runs: before and after a flush."""
    script = _paused_script(RUNS, str(directory), mode)
    before = _totals(directory)
    script.stdin.write("\n")
    script.stdin.close()
    assert script.wait(timeout=30) == 0
    return before, _totals(directory)


def test_a_threaded_worker_tallies_runs_in_memory_and_its_flush_writes_what_direct_writes_would(
    tmp_path: Path,
) -> None:
    """``tally_runs``: nothing written per run, and the flush writes exactly the series, buckets and
    sums that a prefork child's write per run does (prometheus-client's observe() included)."""
    _, direct = _runs_written(tmp_path / "direct", "direct")
    before, tallied = _runs_written(tmp_path / "tally", "tally")
    task = (("queue", "default"), ("task", "tasks.a"))
    assert before.get(("fleet_tasks_started_total", task)) == 0  # precreated at zero, nothing written per run
    assert direct.get(("fleet_tasks_started_total", task)) == 7
    assert direct.get(("fleet_tasks_succeeded_total", task)) == 3
    assert direct.get(("fleet_tasks_in_progress", task)) == 1
    assert direct.get(("fleet_task_runtime_seconds_count", task)) == 5  # the cut-short run has none
    assert direct.get(("fleet_task_queue_wait_seconds_count", task)) == 4  # no stamp, or an ETA: no wait
    assert direct.get(("fleet_task_runtime_seconds_bucket", (("le", "+Inf"), *task))) == 5
    assert direct.get(("fleet_task_runtime_seconds_bucket", (("le", "0.005"), *task))) == 2
    for key in set(direct) | set(tallied):
        assert tallied.get(key) == pytest.approx(direct.get(key), abs=1e-3), key
