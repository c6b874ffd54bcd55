"""Free TCP ports on loopback, for processes a test or a benchmark starts."""

from __future__ import annotations

import contextlib
import random
import socket


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_block(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive TCP ports nothing listens on right now."""
    for _ in range(attempts):
        base = random.randrange(20_000, 60_000)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no block of {count} free ports found")
