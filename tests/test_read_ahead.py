"""Reading ahead (fleet.read_ahead): the same frames as py-amqp reads, from far fewer ``recv`` calls,
a partial frame kept across a timeout, every connection of fleet's app reading that way, and
frames a blocking read took ahead reaching the event loop."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from itertools import pairwise

import pytest
from amqp.transport import TCPTransport
from kombu import Consumer, Queue
from kombu.asynchronous import Hub

from fleet.read_ahead import READ_AHEAD, ReadAheadTCPTransport, read_buffered_frames


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


FRAMES = [
    (random.Random(seed).choice((1, 2, 3)), seed % 7, os.urandom(size))
    for seed, size in enumerate([0, 1, 6, 7, 8, 120, 600, READ_AHEAD - 8, READ_AHEAD, READ_AHEAD + 1, 70_000] * 20)
]


class _Counted:
    """The socket's ``recv``, counted."""

    def __init__(self, recv: object) -> None:
        self.recv = recv
        self.calls = 0

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        return self.recv(size)  # type: ignore[operator]


def _reader(sock: socket.socket, cls: type[TCPTransport]) -> tuple[TCPTransport, _Counted]:
    transport = cls.__new__(cls)  # no connect: the socket is one end of a pair
    transport.sock, transport.raise_on_initial_eintr, transport.connected = sock, True, True
    transport._setup_transport()
    counted = transport._quick_recv = _Counted(transport._quick_recv)
    return transport, counted


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def _send(sock: socket.socket, data: bytes, pieces: int) -> threading.Thread:
    """``data`` written in ``pieces`` uneven writes from a thread (a broker's segments arrive so)."""
    cuts = sorted(random.Random(pieces).sample(range(1, len(data)), pieces - 1)) if pieces > 1 else []
    bounds = [0, *cuts, len(data)]
    writer = threading.Thread(target=lambda: [sock.sendall(data[a:b]) for a, b in pairwise(bounds)])
    writer.start()
    return writer


@pytest.mark.pure
@pytest.mark.parametrize("pieces", [1, 37, 2000])
def test_it_reads_the_frames_py_amqp_reads_with_far_fewer_recv_calls(
    pair: tuple[socket.socket, socket.socket], pieces: int
) -> None:
    ours, theirs = pair
    stream = b"".join(_frame(*frame) for frame in FRAMES)
    results = {}
    for cls in (TCPTransport, ReadAheadTCPTransport):
        transport, recv = _reader(ours, cls)
        writer = _send(theirs, stream, pieces)
        with transport.having_timeout(10):
            results[cls] = [transport.read_frame() for _ in FRAMES], recv.calls
        writer.join()
        assert transport._read_buffer == b""
    (plain, plain_calls), (ahead, ahead_calls) = results[TCPTransport], results[ReadAheadTCPTransport]
    assert plain == ahead == FRAMES
    assert plain_calls > 2.5 * len(FRAMES)  # header, payload (unless empty), end octet: a recv each
    if pieces == 1:  # small frames share a recv (large ones take several either way)
        assert ahead_calls < plain_calls / 2


@pytest.mark.pure
def test_a_partial_frame_survives_a_read_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    transport, _ = _reader(ours, ReadAheadTCPTransport)
    first, second = _frame(1, 1, b"x" * 50), _frame(3, 2, b"body")
    theirs.sendall(first[:30])
    with transport.having_timeout(0.05), pytest.raises(TimeoutError):
        transport.read_frame()
    theirs.sendall(first[30:] + second)
    with transport.having_timeout(5):
        assert transport.read_frame() == (1, 1, b"x" * 50)
        assert transport.read_frame() == (3, 2, b"body")
    ours.setblocking(False)  # as the worker's event loop reads: nothing buffered, nothing waiting
    with transport.having_timeout(0), pytest.raises(TimeoutError):
        transport._read(7, initial=True)


def test_every_connection_of_the_fleet_app_reads_ahead(celery_app: object) -> None:
    with celery_app.connection_for_read() as connection:  # type: ignore[attr-defined]
        connection.connect()
        assert isinstance(connection.connection.transport, ReadAheadTCPTransport)
    with celery_app.connection_for_write() as connection:  # type: ignore[attr-defined]
        connection.connect()
        assert isinstance(connection.connection.transport, ReadAheadTCPTransport)
        queue = Queue(f"read-ahead-{uuid.uuid4()}", auto_delete=True)
        queue(connection.default_channel).declare()  # kombu's channel: its queue arguments and all
        with connection.Producer() as producer:
            producer.publish({"n": 1}, routing_key=queue.name, serializer="json")
        deadline, message = time.monotonic() + 10, None
        while message is None and time.monotonic() < deadline:  # published unconfirmed: it may take a moment
            message = queue(connection.default_channel).get(no_ack=True)
        assert message is not None and message.payload == {"n": 1}


@pytest.mark.pure
def test_corked_writes_wait_for_the_block_end_and_keep_each_frame_as_it_was_written(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """py-amqp writes a view of one buffer it reuses for every frame: what the cork holds must be a copy."""
    ours, theirs = pair
    transport, _ = _reader(ours, ReadAheadTCPTransport)
    reused = bytearray(_frame(1, 1, b"ack-1"))
    view = memoryview(reused)
    theirs.setblocking(False)
    with transport.corked():
        transport.write(view[:])
        reused[:] = _frame(1, 1, b"ack-2")
        transport.write(view[:])
        with transport.corked():  # nested: the outer block sends
            transport.write(b"")
        with pytest.raises(BlockingIOError):
            theirs.recv(100)  # nothing sent yet
    theirs.setblocking(True)
    expected = _frame(1, 1, b"ack-1") + _frame(1, 1, b"ack-2")
    assert theirs.recv(100) == expected
    transport.write(b"direct")
    assert theirs.recv(100) == b"direct"


def test_deliveries_read_with_a_consume_ok_reach_the_event_loop(celery_app: object) -> None:
    """A worker's ``add_consumer`` waits for ``basic.consume-ok``: a blocking read outside the event
    loop's reader, whose ``recv`` takes the deliveries behind the reply into the buffer. The loop then
    polls a socket that stays quiet, and with the prefetch window full nothing more comes: those
    tasks would wait for the broker's next bytes. The worker's tick (read_buffered_frames) hands
    them over."""
    queue = Queue(f"read-ahead-{uuid.uuid4()}", durable=False)
    with celery_app.connection_for_write() as connection:  # type: ignore[attr-defined]
        queue(connection.default_channel).declare()
        with connection.Producer() as producer:
            for index in range(8):
                producer.publish({"n": index}, routing_key=queue.name, serializer="json")
    received: list[int] = []
    try:
        for _ in range(20):  # the deliveries may trail the reply into a read of their own: try again
            received.clear()
            with celery_app.connection_for_read() as connection:  # type: ignore[attr-defined]
                channel = connection.channel()
                channel.basic_qos(0, 8, False)
                consumer = Consumer(
                    channel, [queue], accept=["json"], callbacks=[lambda body, _: received.append(body["n"])]
                )
                consumer.consume()  # waits for consume-ok
                transport = connection.connection.transport
                if not transport.has_frame():
                    continue
                assert received == []  # all eight wait in the buffer, and the socket has nothing for the loop
                hub = Hub()
                connection.transport.register_with_event_loop(connection.connection, hub)
                hub.on_tick.add(partial(read_buffered_frames, connection))
                loop, deadline = hub.create_loop(), time.monotonic() + 10
                while len(received) < 8 and time.monotonic() < deadline:
                    next(loop)
                hub.close()
                assert sorted(received) == list(range(8)) and not transport.has_frame()
                return
        pytest.fail("the deliveries never came in the same read as consume-ok")
    finally:
        with celery_app.connection_for_write() as connection:  # type: ignore[attr-defined]
            connection.default_channel.queue_delete(queue.name)
