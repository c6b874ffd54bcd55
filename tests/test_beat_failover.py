"""Two real beats: one leads, a kill -9 of the leader hands the schedule to the standby on time,
and no run of an entry is sent twice (fleet.beat)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import requests
from kombu import Connection

from fleet.pools import beat_metrics_port
from fleet.testing.broker import drain
from fleet.testing.ports import free_port_block
from fleet.testing.processes import FLEET, FleetProcess
from queues import declare_topology
from tests.support.beat_entries import TICK_EXPIRES, TICK_NAME, TICK_SECONDS

#: a takeover may make one run this much later than its interval (lock retry + tick period + a loaded machine)
TAKEOVER_SLACK = 3.0
#: watched before the first kill and after each of the two (three lock heartbeats each): 90 s in all
PHASE_SECONDS = 30


def _start_beat(env: dict[str, str], name: str, tmp_path: Path, log_dir: Path) -> FleetProcess:
    """A beat with its own schedule file and metrics port, as on its own host or pod."""
    own = {
        **env,
        "FLEET_VAR_DIR": str(tmp_path / name),
        "FLEET_METRICS_PORT": str(free_port_block(beat_metrics_port(0) + 1)),
        "FLEET_TASK_MODULES": "tests.support.chaos_tasks,tests.support.beat_entries",
    }
    return FleetProcess([FLEET, "beat"], own, log_dir / f"beat-{name}-{time.time_ns()}.log").start()


def _metrics(beat: FleetProcess) -> dict[str, float]:
    """This beat's fleet_beat_* samples ({} while it is not serving yet)."""
    port = beat_metrics_port(int(beat.env["FLEET_METRICS_PORT"]))
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.ConnectionError:
        return {}
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fleet_beat_")
    }


def _wait_leader(beats: dict[str, FleetProcess], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leading = [
            name
            for name, beat in beats.items()
            if beat.proc.poll() is None and _metrics(beat).get("fleet_beat_leader") == 1
        ]
        if leading:
            assert len(leading) == 1, f"two leaders at once: {leading}"
            return leading[0]
        time.sleep(0.2)
    raise AssertionError("no beat took the lead:\n" + "\n".join(beat.log()[-2000:] for beat in beats.values()))


def _sent_times(url: str, sink: list[float]) -> None:
    """Take the tick messages beat put into the queue; when each was sent, from its expires header."""
    for message in drain(url, "default"):
        if message.headers.get("task") == "tests.sleep":
            sink.append(datetime.fromisoformat(message.headers["expires"]).timestamp() - TICK_EXPIRES)


def _watch(url: str, sink: list[float], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _sent_times(url, sink)
        time.sleep(0.5)


def test_the_standby_takes_over_on_time_and_no_run_is_sent_twice(
    private_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> None:
    url = private_env["CELERY_BROKER_URL"]
    with Connection(url) as connection:
        declare_topology(connection)
    sent: list[float] = []
    beats = {name: _start_beat(private_env, name, tmp_path, log_dir) for name in ("a", "b")}
    takeovers = []
    try:
        leader = _wait_leader(beats, timeout=60)
        _watch(url, sent, PHASE_SECONDS)
        metrics = _metrics(beats[leader])
        assert time.time() - metrics["fleet_beat_last_tick_timestamp"] < 5
        assert time.time() - metrics[f'fleet_beat_entry_last_sent_timestamp{{entry="{TICK_NAME}"}}'] < TICK_SECONDS + 2
        standby = next(name for name in beats if name != leader)
        assert _metrics(beats[standby])["fleet_beat_leader"] == 0

        for _ in range(2):  # kill the leader; the standby leads; the killed one comes back as the standby
            beats[leader].kill()
            killed_at = time.time()
            new_leader = _wait_leader({standby: beats[standby]}, timeout=15)
            takeovers.append(time.time() - killed_at)
            beats[leader] = _start_beat(private_env, leader, tmp_path, log_dir)
            _watch(url, sent, PHASE_SECONDS)
            leader, standby = new_leader, leader
        _sent_times(url, sent)
    finally:
        for beat in beats.values():
            beat.stop()
    sent.sort()
    gaps = [later - earlier for earlier, later in zip(sent, sent[1:], strict=False)]
    print(
        f"beat: {len(sent)} runs, takeovers after {[round(t, 1) for t in takeovers]} s, "
        f"gaps {min(gaps):.2f}..{max(gaps):.2f} s (interval {TICK_SECONDS} s)"
    )
    assert len(sent) >= 10
    assert min(gaps) > TICK_SECONDS / 2, "no run was sent twice (by the old and the new leader)"
    assert max(gaps) < TICK_SECONDS + TAKEOVER_SLACK, "the standby sent the next due run on time"
