"""fleet.amqp_frames as pure logic: its bytes are py-amqp's ``basic_publish`` bytes, message for message.

Both writers run on a real (unconnected) ``amqp.Connection`` and transport;
only the socket is a stand-in that records what it is given.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import threading
import time
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp.exceptions import FrameSyntaxError
from amqp.method_framing import frame_writer
from amqp.transport import TCPTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Exchange, Queue

from fleet.amqp_frames import CHUNK, encode_publishes, properties_bytes, publish_frames
from fleet.celery_app import FleetCelery
from fleet.confirm_streams import QUEUED, WRITTEN, Pending, Ticket, _Stream
from fleet.messages import TaskMessage, TaskMessages
from tests.test_publish import CALLS

pytestmark = pytest.mark.pure

SMALL_FRAME_MAX = 4096  # RabbitMQ's minimum: bodies past 4088 bytes take several body frames
QUEUE = Queue("default", Exchange("", type="direct"), routing_key="default")


class RecordingSocket:
    """A socket that takes everything written and has nothing to read."""

    def __init__(self, fail_on_write: BaseException | None = None, fail_after: int = 0) -> None:
        self.written = bytearray()
        self.writes = 0
        self.fail_on_write = fail_on_write
        self.fail_after = fail_after  # writes that succeed before fail_on_write is raised
        self.timeout: float | None = None

    def sendall(self, data: Any) -> None:
        if self.fail_on_write is not None and self.writes >= self.fail_after:
            raise self.fail_on_write
        self.written += bytes(data)
        self.writes += 1

    def recv(self, n: int) -> bytes:
        raise BlockingIOError(11, "nothing to read")  # what a non-blocking read of an idle socket does

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout


def _channel(frame_max: int, sock: RecordingSocket | None = None, blocked_capability: bool = True) -> amqp.Channel:
    """A channel of a py-amqp connection whose transport writes to a RecordingSocket."""
    connection = amqp.Connection(frame_max=frame_max)
    if blocked_capability:  # what RabbitMQ negotiates: basic_publish then polls for a blocked notice first
        connection.client_properties["capabilities"] = {"connection.blocked": True}
    transport = TCPTransport("127.0.0.1:5672")
    transport.sock = sock or RecordingSocket()
    transport._setup_transport()
    transport.connected = True
    connection.transport = transport
    connection.frame_writer = frame_writer(connection, transport)
    channel = amqp.Channel(connection, channel_id=3)
    channel.is_open = True
    return channel


def _basic_publish_bytes(items: list[TaskMessage], frame_max: int) -> bytes:
    channel = _channel(frame_max)
    for item in items:
        amqp.Channel.basic_publish(
            channel, item.message, exchange=item.exchange, routing_key=item.routing_key, mandatory=True
        )
    return bytes(channel.connection.transport.sock.written)


def _publish_frames_bytes(items: list[TaskMessage], frame_max: int) -> tuple[bytes, int]:
    channel = _channel(frame_max)
    publish_frames(channel, items)
    sock = channel.connection.transport.sock
    assert channel.connection.bytes_sent == len(items), "one per message, as frame_writer counts"
    return bytes(sock.written), sock.writes


def _item(message: amqp.Message, routing_key: str = "default", exchange: str = "") -> TaskMessage:
    return TaskMessage("id", "tasks.x", QUEUE, exchange, routing_key, None, message)


def test_fleets_own_messages_are_written_byte_for_byte(pure_app: FleetCelery) -> None:
    """Every property fleet sets (priority, expiration, reply_to, eta...), in one write."""
    build = TaskMessages(pure_app)
    items = [build(*call) for call in CALLS * 3]
    big = build("tasks.process_data", ({"rows": "é" * 20_000},), {}, {"priority": 3})  # several body frames
    items.append(big)
    for frame_max in (131072, SMALL_FRAME_MAX):
        ours, writes = _publish_frames_bytes(items, frame_max)
        assert ours == _basic_publish_bytes(items, frame_max)
        assert writes == 1


text = st.text(st.characters(codec="utf-8"), max_size=40)
short_str = st.text(st.characters(codec="utf-8"), max_size=40).filter(lambda s: len(s.encode()) < 256)
header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_str, inner, max_size=4),
    max_leaves=12,
)
properties = st.fixed_dictionaries(
    {
        "content_type": st.sampled_from(["application/json", "application/x-python-serialize"]),
        "application_headers": st.dictionaries(short_str, header_values, max_size=30),
        "delivery_mode": st.sampled_from([1, 2]),
        "priority": st.integers(0, 255),
        "correlation_id": short_str,
        "reply_to": short_str,
    },
    # left out, a str body gets utf-8 from py-amqp
    optional={"content_encoding": st.just("utf-8"), "expiration": st.integers(0, 10**9).map(str)},
)
messages = st.builds(lambda body, props: amqp.Message(body, **props), st.binary(max_size=10_000) | text, properties)
destinations = st.tuples(short_str, short_str)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(st.tuples(messages, destinations), min_size=1, max_size=12),
    frame_max=st.sampled_from([SMALL_FRAME_MAX, 8192, 131072]),
)
def test_any_batch_is_written_byte_for_byte(batch: list[tuple[amqp.Message, tuple[str, str]]], frame_max: int) -> None:
    """Empty and str bodies, bodies of many frames, unicode, many and nested headers, any priority."""
    items = [_item(message, routing_key, exchange) for message, (exchange, routing_key) in batch]
    theirs = _basic_publish_bytes(items, frame_max)
    ours, _ = _publish_frames_bytes(items, frame_max)
    assert ours == theirs


def test_the_frames_reach_the_exact_frame_max() -> None:
    """Bodies of exactly frame_max - 8, one byte more, and none at all."""
    body_max = SMALL_FRAME_MAX - 8
    items = [_item(amqp.Message(b"x" * size)) for size in (0, 1, body_max - 1, body_max, body_max + 1, 3 * body_max)]
    assert _publish_frames_bytes(items, SMALL_FRAME_MAX)[0] == _basic_publish_bytes(items, SMALL_FRAME_MAX)
    assert encode_publishes(3, SMALL_FRAME_MAX, []) == b""


def test_a_closed_connection_and_a_write_timeout_raise_what_basic_publish_raises() -> None:
    item = _item(amqp.Message(b"{}"))
    closed = _channel(131072)
    closed.connection = None
    with pytest.raises(amqp.RecoverableConnectionError, match="connection closed"):
        publish_frames(closed, [item])
    for writer in (publish_frames, lambda channel, items: amqp.Channel.basic_publish(channel, items[0].message)):
        channel = _channel(131072, RecordingSocket(fail_on_write=TimeoutError("timed out")))
        with pytest.raises(amqp.RecoverableConnectionError, match="timed out"):
            writer(channel, [item])
        assert channel.connection.bytes_sent == 0
    broken = _channel(131072, RecordingSocket(fail_on_write=BrokenPipeError(32, "Broken pipe")))
    with pytest.raises(BrokenPipeError):
        publish_frames(broken, [item])
    assert not broken.connection.transport.connected, "the transport's own bookkeeping of a dead socket"


def test_a_confirm_stream_whose_second_write_fails_knows_what_may_have_reached_rabbitmq() -> None:
    """Chunk 1 written (its tags await acks), chunk 2 unknown (WRITTEN), chunk 3 never sent (QUEUED)."""
    channel = _channel(131072, RecordingSocket(fail_on_write=BrokenPipeError(32, "Broken pipe"), fail_after=1))
    stream = _Stream(SimpleNamespace(idle_seconds=60.0), threading.Condition())  # type: ignore[arg-type]
    stream.connection, stream.channel, stream.last_used = SimpleNamespace(), channel, time.monotonic()
    ticket = Ticket(2 * CHUNK + 10)
    batch = [Pending(_item(amqp.Message(b"{}")), time.monotonic() + 10, ticket) for _ in range(2 * CHUNK + 10)]
    with pytest.raises(BrokenPipeError):
        stream._round(batch)
    assert [entry.state for entry in batch] == [WRITTEN] * (2 * CHUNK) + [QUEUED] * 10
    assert stream.sent == CHUNK and list(stream.waiting.values()) == batch[:CHUNK]
    assert channel.connection.bytes_sent == CHUNK


def test_properties_are_py_amqps_for_every_type_a_header_can_hold() -> None:
    """The fast path's edges (int widths, surrogates, tuples, empty tables) and the types it hands to py-amqp."""

    class Text(str):
        pass

    class Level(enum.IntEnum):
        HIGH = 9

    headers = {
        "ints": [0, -1, 2**31 - 1, -(2**31) + 1, -(2**31), 2**31, 2**63 - 1, -(2**63)],
        "surrogate": "\ud800 lone",
        "tuple": (1, "two", None, True, False, 2.5),
        "empty": {},
        "nested": {"a": [{"b": []}]},
        "": "empty key",
    }
    unusual = [b"bytes", decimal.Decimal("1.25"), datetime.datetime(2026, 12, 7), Text("sub"), Level.HIGH]
    cases = [amqp.Message(b"", application_headers=headers, correlation_id="\ud800", priority=0)]
    cases += [amqp.Message(b"", application_headers={**headers, "odd": value}) for value in unusual]
    cases += [amqp.Message(b"", correlation_id=b"raw", timestamp=1_700_000_000, application_headers={})]
    cases += [amqp.Message(b"", application_headers={b"bytes key": 1})]
    for message in cases:
        assert properties_bytes(message) == message._serialize_properties(), message.properties


def test_properties_py_amqp_refuses_are_refused_alike() -> None:
    """A value no AMQP table holds: the same FrameSyntaxError, from py-amqp itself."""
    message = amqp.Message(b"", application_headers={"ok": 1, "bad": object()})
    with pytest.raises(FrameSyntaxError) as theirs:
        message._serialize_properties()
    with pytest.raises(FrameSyntaxError) as ours:
        properties_bytes(message)
    assert str(ours.value) == str(theirs.value)
