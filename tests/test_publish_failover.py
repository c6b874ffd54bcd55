"""The publisher honours a failover broker URL list: dead nodes skipped within the deadline, the answering one kept.

Two independent disposable nodes (not clustered) and, first in the list, a
"frozen" node: a TCP listener that accepts connections and never speaks AMQP,
the worst kind of dead node (a connect that neither fails nor succeeds).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fleet.publish import publish_many
from fleet.testing.broker import queue_depth
from tests.support.api import ApiServer
from tests.support.apps import app_for
from tests.support.disposable_rabbit import DisposableRabbit

PUBLISH_TIMEOUT = 3.0
TASK = {"task": "tests.sleep", "args": [0]}  # routed to the default queue; no worker runs here


@pytest.fixture
def frozen_node() -> Iterator[str]:
    """A broker URL whose port accepts TCP connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    yield f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}//"
    listener.close()


@pytest.fixture
def nodes() -> Iterator[tuple[DisposableRabbit, DisposableRabbit]]:
    first, second = DisposableRabbit(), DisposableRabbit()
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(DisposableRabbit.start, (first, second)))
        yield first, second
    finally:
        for node in (first, second):
            node.remove()


def post(api: ApiServer) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(api.url("/api/tasks"), json=TASK, timeout=30)
    return response, time.monotonic() - started


def test_dead_nodes_are_skipped_and_a_node_loss_fails_over(
    nodes: tuple[DisposableRabbit, DisposableRabbit], frozen_node: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    first, second = nodes
    first.stop()  # the list reads frozen; dead; alive
    env = {
        **fleet_env,
        "CELERY_BROKER_URL": f"{frozen_node};{first.url};{second.url}",
        "FLEET_VAR_DIR": str(tmp_path / "var"),
        "FLEET_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
    }
    api = ApiServer(env, tmp_path / "log").start()
    try:
        timings = []
        for _ in range(6):
            response, seconds = post(api)
            assert response.status_code == 202, response.text
            assert seconds < PUBLISH_TIMEOUT + 0.5
            timings.append(seconds)
        # Each gunicorn worker pays the frozen node's share once; then it starts from the node that answered.
        assert sorted(timings)[:4][-1] < PUBLISH_TIMEOUT / 3, timings
        with app_for(env) as app:
            assert len(publish_many(app, [("tests.sleep", (0,), {})] * 10)) == 10
        assert queue_depth(second.url, "default")[0] == 16

        first.start()
        second.kill()  # the node the publisher is on
        started = time.monotonic()
        while (response := post(api)[0]).status_code != 202:
            assert time.monotonic() - started < 10, response.text
            time.sleep(0.2)
        recovered = time.monotonic() - started
        assert recovered < 10
        assert queue_depth(first.url, "default")[0] >= 1
        print(
            f"failover: 202s through frozen;dead;alive in {' '.join(f'{t:.2f}' for t in timings)}s;"
            f" 202 again {recovered:.2f}s after the answering node was killed"
        )
    finally:
        api.stop()
