"""A disposable RabbitMQ cluster on loopback, for tests that lose nodes.

Each node is a :class:`DisposableRabbit` (own node name, AMQP and distribution
ports, data directory). They share the ``rabbitmq`` user's Erlang cookie, because
Debian's wrapper runs every node and every ``rabbitmqctl`` as that user, and the
second and later nodes join the first with ``stop_app; join_cluster; start_app``.
The shared node on 5672 is never addressed: every command names one of these
nodes, and :meth:`RabbitCluster.remove` checks ``epmd -names`` so that it only
ever stops nodes this cluster started.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.disposable_rabbit import DisposableRabbit, RabbitError

NODE_PREFIX = "fleet-test-"


def epmd_names() -> set[str]:
    """The short node names registered with epmd on this host (``name@`` part only)."""
    done = subprocess.run(["epmd", "-names"], capture_output=True, text=True, timeout=10, check=False)
    return {line.split()[1] for line in done.stdout.splitlines() if line.startswith("name ")}


class RabbitCluster:
    """``size`` disposable nodes clustered together. Use as a context manager."""

    def __init__(self, size: int = 3, **node_options: object) -> None:
        self.nodes = [DisposableRabbit(**node_options) for _ in range(size)]  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        """The failover list, first node first: ``amqp://…:p1//;amqp://…:p2//;…``."""
        return ";".join(node.url for node in self.nodes)

    def start(self) -> RabbitCluster:
        """Start every node (in parallel), then join the others to the first."""
        with ThreadPoolExecutor(len(self.nodes)) as starting:
            for future in [starting.submit(node.start) for node in self.nodes]:
                future.result()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
            node.ctl("await_startup")
        self.wait_running(len(self.nodes))
        return self

    def running(self, via: DisposableRabbit | None = None) -> set[str]:
        """The node names the cluster reports running, asked through ``via`` (default: any live node)."""
        asked = via or next(node for node in self.nodes if node.pid() is not None)
        return set(json.loads(asked.ctl("cluster_status", "--formatter", "json"))["running_nodes"])

    def wait_running(self, count: int, timeout: float = 90) -> None:
        """Wait until ``count`` nodes are running members of the cluster."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.running()) >= count:
                    return
            except (RabbitError, StopIteration, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise RabbitError(f"fewer than {count} running cluster members after {timeout}s")
            time.sleep(0.5)

    def restart(self, node: DisposableRabbit) -> None:
        """Start a stopped or killed member again on its data; it rejoins the cluster by itself."""
        node.start()
        self.wait_running(sum(1 for n in self.nodes if n.pid() is not None))

    def remove(self) -> None:
        """Stop every node of this cluster, even if some are already dead or failing, and delete its data."""
        ours = {node.node.split("@", 1)[0] for node in self.nodes}
        assert all(name.startswith(NODE_PREFIX) for name in ours), "only the cluster's own nodes are stopped"
        errors = []
        for node in self.nodes:
            if node.node.split("@", 1)[0] in epmd_names() or node.pid() is not None:
                try:
                    node.kill()  # the data is thrown away: no need for a graceful cluster stop
                except Exception as exc:  # noqa: BLE001 - clean the other nodes anyway
                    errors.append(exc)
            node.remove()
        if errors:
            raise RabbitError(f"could not stop every cluster node: {errors}")

    def __enter__(self) -> RabbitCluster:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc: object) -> None:
        self.remove()
