"""py-amqp reading ahead (one ``recv`` for many frames instead of three system calls a frame)
and writing many frames at once.

py-amqp's TCP transport reads exactly what it needs next: a frame's 7-byte header,
its payload, its end octet, one ``recv`` each, so nine for every delivery (method,
content header and body frames). :class:`ReadAheadTCPTransport` asks the socket for
up to :data:`READ_AHEAD` bytes whenever it needs more and serves the next reads from
what came. Nothing else changes: the bytes not yet used stay in py-amqp's own
``_read_buffer``, where its frame reader already puts a partial frame back on a
timeout. The worker's event loop drains the connection until a read would block. A
blocking read made outside it, waiting for an RPC's reply, can take the frames behind
the reply into the buffer, and the socket then stays quiet while they wait. Starting to
consume a queue with a backlog does that: ``basic.consume-ok`` comes with the first
deliveries. :func:`read_buffered_frames` runs on every turn of the loop and handles
them. Without it, a worker with a full prefetch window ran nothing until the broker's
next bytes (docs/PERFORMANCE.md, "Read-ahead").

Writes go the other way round: :meth:`ReadAheadTCPTransport.corked` holds the frames
written inside it and sends them in one ``sendall``, for the worker's acks that come
due in one turn of its event loop (fleet.worker.consumer).

:class:`FleetAMQPTransport` is kombu's ``pyamqp`` transport on that reader; every
connection of fleet's Celery app uses it (fleet.failover). ``amqps://`` keeps
py-amqp's TLS transport as it is.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from amqp.transport import TCPTransport
from kombu.transport import pyamqp

#: Bytes asked of the socket at once. A no-op delivery is about 600 bytes; every read
#: slices what is left of the buffer, so a much larger one would cost copying.
READ_AHEAD = 16384
_RETRY = (errno.EAGAIN, errno.EINTR)


class ReadAheadTCPTransport(TCPTransport):
    """py-amqp's TCP transport, reading up to :data:`READ_AHEAD` bytes per ``recv``; writes made
    inside :meth:`corked` go out in one ``sendall``."""

    _corked: list[bytes] | None = None

    @contextmanager
    def corked(self) -> Iterator[None]:
        """Hold every write until the block ends, then send them in one system call.

        For the worker's acks: those that came due in one turn of its event loop
        (fleet.worker.consumer). Frames stay whole and in order; only their sending waits.
        """
        if self._corked is not None:  # nested: the outer block sends
            yield
            return
        self._corked = []
        try:
            yield
        finally:
            held, self._corked = self._corked, None
            if held:
                super().write(b"".join(held))

    def write(self, s: bytes) -> None:
        if self._corked is not None:
            self._corked.append(bytes(s))  # a copy: py-amqp writes views of one buffer it reuses per frame
        else:
            super().write(s)

    def has_frame(self) -> bool:
        """Whether a whole frame (7-byte header, payload, end octet) waits in the buffer."""
        buffered = self._read_buffer
        return len(buffered) >= 8 and len(buffered) >= 8 + int.from_bytes(buffered[3:7], "big")

    def _read(self, n: int, initial: bool = False, _errnos: tuple[int, ...] = _RETRY) -> bytes:
        """Exactly ``n`` bytes: py-amqp's ``TCPTransport._read`` but for the size asked of ``recv``."""
        recv = self._quick_recv
        rbuf = self._read_buffer
        try:
            while len(rbuf) < n:
                try:
                    chunk = recv(max(n - len(rbuf), READ_AHEAD))
                except OSError as exc:
                    if exc.errno in _errnos:
                        if initial and self.raise_on_initial_eintr:
                            raise TimeoutError from exc  # py-amqp's socket.timeout
                        continue
                    raise
                if not chunk:
                    raise OSError("Server unexpectedly closed connection")
                rbuf += chunk
        except BaseException:
            self._read_buffer = rbuf
            raise
        result, self._read_buffer = rbuf[:n], rbuf[n:]
        return result


def read_buffered_frames(connection: Any) -> None:
    """Handle every whole frame already read into ``connection``'s buffer (a kombu connection).

    For an event loop's ``on_tick``: the loop polls the socket next, which would not
    wake for bytes already read. Reads nothing from the socket but the rest of a frame
    whose first bytes came.
    """
    if not connection.connected:
        return
    amqp = connection.connection
    transport = amqp.transport
    if not isinstance(transport, ReadAheadTCPTransport):
        return
    while transport.has_frame():
        try:
            amqp.drain_events(timeout=0)
        except TimeoutError:  # the buffer ended inside a method's frames: the socket will wake the loop
            return


class ReadAheadConnection(pyamqp.Connection):
    """kombu's py-amqp connection (its channels speak kombu), whose plain-TCP transport reads ahead."""

    def Transport(  # noqa: N802 - py-amqp's name for the factory method
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        socket_settings: Any = None,
        **kwargs: Any,
    ) -> Any:
        timeouts = {"read_timeout": read_timeout, "write_timeout": write_timeout, "socket_settings": socket_settings}
        if ssl:
            return super().Transport(host, connect_timeout, ssl, **timeouts, **kwargs)
        return ReadAheadTCPTransport(host, connect_timeout=connect_timeout, **timeouts, **kwargs)


class FleetAMQPTransport(pyamqp.Transport):
    """kombu's ``pyamqp`` transport on :class:`ReadAheadConnection`."""

    Connection = ReadAheadConnection
