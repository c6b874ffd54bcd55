"""How ``fleet api`` serves: gevent workers (or gthread), a socket per worker (SO_REUSEPORT), a taken port refused."""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from fleet.api.server import check_bind_free
from fleet.testing.ports import free_port
from fleet.testing.processes import FLEET
from tests.support.api import ApiServer

LISTEN, ESTABLISHED = "0A", "01"  # socket states in /proc/net/tcp


def _server_sockets(port: int, state: str) -> set[int]:
    """Inodes of the loopback TCP sockets whose local port is ``port``, in ``state``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


def _owner(inodes: set[int], pids: list[int]) -> Counter[int]:
    """How many of ``inodes`` each of ``pids`` holds open."""
    held: Counter[int] = Counter()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().name
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                held[pid] += 1
    return held


def _workers(master: int, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while True:
        pids = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
        if len(pids) == count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


@pytest.mark.pure
def test_a_listened_on_address_is_refused_and_a_free_one_passes() -> None:
    port = free_port()
    with socket.socket() as other:  # as another API would hold it: SO_REUSEPORT
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(OSError):
            check_bind_free(f"127.0.0.1:{port}")
        with pytest.raises(OSError):
            check_bind_free(f"0.0.0.0:{port}")
    check_bind_free(f"127.0.0.1:{port}")
    check_bind_free("unix:/nonexistent/fleet.sock")  # not an address family it checks: gunicorn's


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_each_worker_listens_for_itself_and_keep_alive_connections_spread(
    fleet_env: dict[str, str], log_dir: Path, worker_class: str
) -> None:
    """On one shared socket a gunicorn worker could accept all of a client's keep-alive connections
    (16 of 16 in 2 of 6 benchmark runs), leaving the other worker, and a core, idle. Either worker class."""
    extra = {} if worker_class == "gevent" else {"FLEET_API_WORKER_CLASS": worker_class}  # gevent: the default
    server = ApiServer(fleet_env, log_dir, **extra).start()
    clients: list[socket.socket] = []
    try:
        server.process.wait_for_log(f"Using worker: {worker_class}", timeout=10)
        assert server.process.proc is not None
        workers = _workers(server.process.proc.pid, 2)
        assert len(workers) == 2, workers
        listening = _owner(_server_sockets(server.port, LISTEN), [server.process.proc.pid, *workers])
        assert listening == Counter(dict.fromkeys(workers, 1)), listening  # one each, none in the master
        for _ in range(32):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            clients.append(client)
        for client in clients:  # answered, so accepted by a worker, and kept alive
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: fleet\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200"), "healthz did not answer 200"
        serving = _owner(_server_sockets(server.port, ESTABLISHED), workers)
        assert sum(serving.values()) == 32, serving
        assert min(serving[pid] for pid in workers) >= 4, serving  # hashed: all but never fewer than 4 of 32
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_a_second_api_on_a_taken_port_exits_with_a_clear_error(fleet_env: dict[str, str], log_dir: Path) -> None:
    """Without the check, SO_REUSEPORT would let it share the port with the first, silently."""
    first = ApiServer(fleet_env, log_dir).start()
    try:
        done = subprocess.run([FLEET, "api"], env=first.env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert f"the API cannot listen on 127.0.0.1:{first.port}" in done.stderr, done.stderr
        assert all(first.get("/healthz").status_code == 200 for _ in range(10))
    finally:
        first.stop()


def test_a_worker_serves_at_most_its_connections_and_the_next_waits_its_turn(
    fleet_env: dict[str, str], log_dir: Path
) -> None:
    """FLEET_API_CONNECTIONS bounds what a gevent worker holds at once (each may carry a 1 MiB body):
    clients that never finish their request fill it, the next connection waits, and is served once one leaves."""
    server = ApiServer(fleet_env, log_dir, FLEET_API_WORKERS="1", FLEET_API_CONNECTIONS="2").start()
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
    waiting = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # queued behind them by the kernel
    try:
        for client in stalled:  # a request line and no end of headers: each holds its connection
            client.sendall(b"POST /api/tasks HTTP/1.1\r\nHost: fleet\r\n")
        assert server.process.proc is not None
        workers = _workers(server.process.proc.pid, 1)
        deadline = time.monotonic() + 10
        while sum(_owner(_server_sockets(server.port, ESTABLISHED), workers).values()) < 2:
            assert time.monotonic() < deadline, "the worker did not accept the first two connections"
            time.sleep(0.05)
        waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: fleet\r\n\r\n")
        waiting.settimeout(1.5)
        with pytest.raises(TimeoutError):
            waiting.recv(65536)  # not accepted: the worker's two connections are taken
        stalled.pop().close()
        waiting.settimeout(10)
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for client in [*stalled, waiting]:
            client.close()
        server.stop()
