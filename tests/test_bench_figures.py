"""The bench's pure logic: /proc parsing, CPU of a process tree, windows, efficiency, a median's CI, the report.

Nothing here times a speed: the inputs are fixed numbers and the outputs arithmetic, except for
the CPU clock bench.cpu reads, checked against this process's own.
"""

from __future__ import annotations

import math
import os
import subprocess
import time

import pytest

from bench import report
from bench.cpu import TICKS_PER_S, Stat, parse_stat, process_cpu_seconds, tree, tree_seconds
from bench.profile import HAND_OFF, UNOWNED, tally
from bench.scenarios.metrics_overhead import overhead_figures, overlap_rates
from bench.stats import efficiency, median_ci, window_rates

pytestmark = pytest.mark.pure

# A real /proc/<pid>/stat line, its comm holding a space and a parenthesis, as a worker's may.
STAT = (
    "4242 (celery) worker) S 4200 4242 4242 0 -1 4194560 1523 0 0 0 "
    "130 27 9 4 20 0 3 0 12345 123456789 4567 18446744073709551615 1 1 0 0 0 0 0 16781312 0 0 0 17 1 0 0 0 0 0"
)


def test_parse_stat_reads_past_a_comm_with_spaces_and_parentheses() -> None:
    stat = parse_stat(STAT)
    assert (stat.pid, stat.ppid, stat.own_ticks, stat.reaped_ticks) == (4242, 4200, 157, 13)


def test_tree_counts_descendants_and_what_they_reaped_but_not_strangers() -> None:
    stats = {
        s.pid: s
        for s in (
            Stat(10, 1, 100, 50),  # the worker; 50 ticks of a recycled child it reaped
            Stat(11, 10, 30, 0),  # pool child
            Stat(12, 11, 5, 0),  # grandchild
            Stat(20, 1, 1000, 0),  # another process on the machine
        )
    }
    assert tree(stats, [10]) == {10, 11, 12}
    assert tree(stats, [10, 99]) == {10, 11, 12}  # a root that exited counts nothing
    no_clock = lambda pid: None  # noqa: E731 - every process read in ticks
    assert tree_seconds(stats, [10], no_clock) == pytest.approx(185 / TICKS_PER_S)
    clocks = {10: 2.0, 11: 0.5, 12: 0.125}  # own time from the clocks, what they reaped still in ticks
    assert tree_seconds(stats, [10], clocks.get) == pytest.approx(2.625 + 50 / TICKS_PER_S)


def test_a_process_cpu_clock_is_read_to_well_under_a_clock_tick() -> None:
    """The clock bench.cpu reads for a process is this process's own CPU clock, to the microsecond."""
    before, own_before = process_cpu_seconds(os.getpid()), time.process_time()
    spin_until = own_before + 0.003  # 3 ms of CPU: less than one 10 ms tick
    while time.process_time() < spin_until:
        pass
    spent, own_spent = process_cpu_seconds(os.getpid()) - before, time.process_time() - own_before
    assert 0.003 <= spent < 0.010
    assert spent == pytest.approx(own_spent, abs=0.0005)


def test_a_process_that_is_gone_has_no_cpu_clock() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert process_cpu_seconds(child.pid) is None


def test_window_rates_split_completions_after_the_warm_up() -> None:
    finished = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 4.5]  # two warm-up, then windows of three
    assert window_rates(finished, skip=2, size=3) == pytest.approx([3 / (2.0 - 0.5), 3 / (4.5 - 2.0)])
    with pytest.raises(ValueError):
        window_rates(finished, skip=0, size=3)


def test_efficiency_is_rate_over_slots_per_task_time() -> None:
    assert efficiency(360, slots=2, task_seconds=0.005) == pytest.approx(0.9)
    assert efficiency(720, slots=16, task_seconds=0.02) == pytest.approx(0.9)


@pytest.mark.parametrize(("n", "expected"), [(6, (0, 5)), (10, (1, 8)), (20, (5, 14)), (40, (13, 26))])
def test_median_ci_takes_the_binomial_order_statistics(n: int, expected: tuple[int, int]) -> None:
    """The textbook 95% intervals for the median (0-based order statistics)."""
    assert median_ci([float(i) for i in range(n)]) == expected
    assert all(math.isnan(x) for x in median_ci([]))


def test_overlap_rates_count_only_while_both_sides_ran() -> None:
    rates = overlap_rates({"on": [0.0, 1.0, 2.0, 3.0, 4.0], "off": [1.0, 2.0, 10.0]})
    assert rates == {"on": pytest.approx(4 / 3), "off": pytest.approx(2 / 3)}


def test_overhead_is_the_median_cpu_ratio_with_its_interval() -> None:
    cpu = {"on": [110.0] * 10, "off": [100.0] * 10}
    rates = {"on": [90.0] * 10, "off": [100.0] * 10}
    figures = overhead_figures(rates, cpu)
    assert figures["overhead"] == pytest.approx(0.1)
    assert figures["throughput_overhead"] == pytest.approx(0.1)
    assert figures["resolves_5pct"] and figures["decides_goal"]


def test_ratios_are_none_for_failed_or_missing_scenarios_and_the_table_still_renders() -> None:
    results = {
        "fleet": {"status": "measured", "tasks_per_s": 2000.0, "cpu_us_per_task": 300.0},
        "dramatiq": {"status": "measured", "tasks_per_s": 4000.0, "cpu_us_per_task": 400.0},
        "results": {
            "status": "measured",
            "sqlite": {"ratio": 1.5},
            "redis": {"status": "failed", "error": "ConnectionError()"},
        },
        "cpu_bound": {"status": "failed", "error": "TimeoutError()"},
        "priority_under_flood": {"status": "measured", "p99_ms": 40.0},
        "api_enqueue": {"status": "measured", "requests_per_s": 900.0, "p99_ms": 55.0,
                        "batch": {"tasks_per_s": 7000.0, "raw_confirmed_per_s": 8000.0},
                        "naive": {"requests_per_s": 1800.0}},
        "transport": {"status": "measured", "raw_confirmed_per_s": 9000.0},  # earlier in the run: not the batch's
        "metrics_overhead": {"status": "measured", "overhead": 0.03, "overhead_ci95": [-0.02, 0.08], "rounds": 40,
                             "decides_goal": False},
    }  # fmt: skip
    ratios = report.ratios(results)
    assert set(ratios) == set(report.GOALS)
    assert ratios["fleet_vs_dramatiq"] == 0.5
    assert ratios["cpu_per_task_vs_dramatiq"] == 0.75
    assert ratios["results_vs_celery_defaults"] == 1.5
    assert ratios["results_vs_celery_defaults_redis"] is None
    assert ratios["cpu_bound_efficiency"] is None
    assert ratios["priority_under_flood.p99_ms"] == 40.0
    assert (ratios["api_vs_naive"], ratios["api_enqueue.p99_ms"], ratios["api_batch_vs_ceiling"]) == (0.5, 55.0, 0.875)
    facts = {
        "when": "now", "commit": "abc", "run": "quick", "cores": 2, "cpu": "x", "rabbitmq": {}, "python": "3",
        "packages": {}, "load_average_end": [], "sizes": {"repeats": 3},
    }  # fmt: skip
    table = report.table({"scenarios": results, "machine": facts, "ratios": ratios})
    assert "| priority_under_flood.p99_ms | 40.00 | below 50 | yes |" in table
    assert "| cpu_per_task_vs_dramatiq | 0.75 | at most 1 | yes |" in table
    assert "| api_enqueue.p99_ms | 55.00 | below 50 | no |" in table
    assert "| api_batch_vs_ceiling | 0.88 | at least 0.8 | yes |" in table
    assert "| results | plain Celery defaults, results in Redis | failed |" in table
    assert "| metrics_overhead | 0.03 (95% CI -0.020 to +0.080, 40 rounds) | at most 0.05 | undecided" in table


def test_profile_charges_each_sample_to_the_innermost_owned_frame_and_the_pool_hand_off_apart() -> None:
    loop = "asynloop (celery/worker/loops.py:130);Hub.create_loop (kombu/asynchronous/hub.py:395)"
    thread = "Thread.run (threading.py:982)"
    lines = [
        # json below kombu's loads below fleet's check: kombu's
        f"{loop};check_message (fleet/worker/protocol.py:187);loads (kombu/utils/json.py:93);decode (json/x.py:3) 6",
        # logging below fleet's hook below Celery's trace: fleet's
        "fast_trace_task (celery/app/trace.py:798);_on_postrun (fleet/worker/taskrun.py:68);info (logging/x.py:1) 3",
        f"{loop};on_apply (fleet/worker/limits.py:270);ThreadPoolExecutor.submit (concurrent/futures/thread.py:175) 2",
        f"{thread};_worker (concurrent/futures/thread.py:83) 1",  # a pool thread taking its next task
        f"{thread};_watch (threading.py:1) 1",
        "",
        "not a sample line",
    ]
    owners, places = tally(lines)
    assert owners == {
        "AMQP stack (kombu, py-amqp, vine)": 6 / 13,
        "fleet": 3 / 13,
        HAND_OFF: 3 / 13,
        UNOWNED: 1 / 13,
    }
    assert places["AMQP stack (kombu, py-amqp, vine)", "loads (kombu/utils/json.py)"] == 6 / 13
    assert places["fleet", "_on_postrun (fleet/worker/taskrun.py)"] == 3 / 13
    assert tally([]) == ({}, {})
