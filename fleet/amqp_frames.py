"""Many ``basic.publish`` in one socket write: the bytes py-amqp writes, without its per-message cost.

py-amqp's ``Channel.basic_publish`` handles one message per call: on a
RabbitMQ connection it first polls the socket for a ``connection.blocked``
notice, then serialises the method frame, the content header and the body
and writes them (``amqp/method_framing.py``, ``frame_writer``). In a batch
that is a few system calls and most of the publisher's CPU per message
(docs/PERFORMANCE.md). :func:`publish_frames` builds the frames of many
messages into one buffer and hands it to the transport in one write: the same
bytes, the same checks and errors, once per chunk instead of once per message.

The content header (the message's properties and Celery's header table) is
encoded by :func:`properties_bytes`, which writes what py-amqp's
``_serialize_properties`` writes for the types a task message holds at about
a third of its cost (its table writer makes a buffer per table and a ``pack``
per value, and was a third of the batch endpoint's CPU); anything else goes
to py-amqp itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from struct import pack
from typing import Any

import amqp
from amqp import spec
from amqp.exceptions import RecoverableConnectionError
from amqp.serialization import dumps

from fleet.messages import TaskMessage

__all__ = ["CHUNK", "encode_publishes", "properties_bytes", "publish_frames", "ready_to_publish", "write_publishes"]

#: Messages per write. Past a few hundred the syscall is amortised and a larger
#: buffer only costs memory; a failed write leaves at most this many messages unknown.
CHUNK = 256

_METHOD, _HEADER, _BODY = 1, 2, 3
_FRAME_END = b"\xce"
_CLASS_ID = spec.Basic.Publish[0]
_PUBLISH_SIG = pack(">HH", *spec.Basic.Publish)


def encode_publishes(channel_id: int, frame_max: int, items: Sequence[TaskMessage]) -> bytes:
    """The frames ``basic_publish(message, exchange, routing_key, mandatory=True)`` writes for each item, joined.

    Bodies longer than ``frame_max - 8`` are split into body frames of that
    size, as ``frame_writer`` does. A ``str`` body is encoded with the
    message's ``content_encoding``, set to utf-8 if missing (py-amqp's side
    effect on the message, kept so the header says what the body is).
    """
    body_max = frame_max - 8
    methods: dict[tuple[str, str], bytes] = {}  # a batch has few destinations: each method frame is built once
    parts: list[bytes] = []
    append = parts.append
    for item in items:
        key = (item.exchange, item.routing_key)
        method = methods.get(key)
        if method is None:
            args = _PUBLISH_SIG + dumps("Bssbb", (0, item.exchange, item.routing_key, True, False))
            method = methods[key] = pack(">BHI", _METHOD, channel_id, len(args)) + args + _FRAME_END
        append(method)
        message = item.message
        body = message.body
        if isinstance(body, str):
            body = body.encode(message.properties.setdefault("content_encoding", "utf-8"))
        properties = properties_bytes(message)
        append(pack(">BHIHHQ", _HEADER, channel_id, 12 + len(properties), _CLASS_ID, 0, len(body)))
        append(properties)
        append(_FRAME_END)
        for start in range(0, len(body), body_max):
            piece = body[start : start + body_max]
            append(pack(">BHI", _BODY, channel_id, len(piece)))
            append(piece)
            append(_FRAME_END)
    return b"".join(parts)


#: (property, its AMQP type, its flag bit) in py-amqp's order: basic has 14, so one 16-bit flag word
_PROPERTIES = tuple((name, kind, 1 << (15 - index)) for index, (name, kind) in enumerate(amqp.Message.PROPERTIES))
_I32 = 2147483647  # py-amqp writes an int as 'I' within +-this, as 'L' beyond (so -2**31 is an 'L')
_KEYS: dict[str, bytes] = {}  # a header name's encoding (length byte and bytes): Celery's names are few
_KEYS_MAX = 4096


class _Unusual(Exception):
    """A value outside the fast path's types: py-amqp encodes the whole message instead."""


def properties_bytes(message: amqp.Message) -> bytes:
    """``message._serialize_properties()``, byte for byte: the flag word, then each property set."""
    try:
        return _properties(message.properties)
    except _Unusual:
        return message._serialize_properties()


def _properties(properties: Mapping[str, Any]) -> bytes:
    flags = 0
    parts = []
    for name, kind, bit in _PROPERTIES:
        value = properties.get(name)
        if value is None:
            continue
        flags |= bit
        if kind == "s":
            parts.append(_shortstr(value))
        elif kind == "F":
            parts.append(_table(value or {}))
        elif kind == "o":
            parts.append(pack("B", value))
        elif kind == "L":
            parts.append(pack(">Q", value))
        else:  # no other kind among basic's properties today
            raise _Unusual(kind)
    return pack(">H", flags) + b"".join(parts)


def _shortstr(value: Any) -> bytes:
    if type(value) is not str:
        raise _Unusual(type(value))
    data = value.encode("utf-8", "surrogatepass")
    return pack("B", len(data)) + data


def _table(table: Mapping[Any, Any]) -> bytes:
    if type(table) is not dict:
        raise _Unusual(type(table))
    parts = []
    for key, value in table.items():
        encoded = _KEYS.get(key)
        if encoded is None:
            if type(key) is not str:
                raise _Unusual(type(key))
            raw = key.encode("utf-8", "surrogatepass")
            encoded = pack("B", len(raw)) + raw
            if len(_KEYS) < _KEYS_MAX:
                _KEYS[key] = encoded
        parts.append(encoded)
        parts.append(_value(value))
    data = b"".join(parts)
    return pack(">I", len(data)) + data


def _value(value: Any) -> bytes:
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8", "surrogatepass")
        return pack(">cI", b"S", len(data)) + data
    if value is None:
        return b"V"
    if kind is bool:
        return b"t\x01" if value else b"t\x00"
    if kind is int:
        return pack(">ci", b"I", value) if -_I32 <= value <= _I32 else pack(">cq", b"L", value)
    if kind is list or kind is tuple:
        data = b"".join([_value(item) for item in value])
        return b"A" + pack(">I", len(data)) + data
    if kind is dict:
        return b"F" + _table(value)
    if kind is float:
        return pack(">cd", b"d", value)
    raise _Unusual(kind)  # bytes, Decimal, datetime, subclasses, and what py-amqp refuses


def publish_frames(channel: amqp.Channel, items: Sequence[TaskMessage]) -> None:
    """Publish every item (mandatory) on ``channel`` in one transport write; the caller counts delivery tags.

    :func:`ready_to_publish`, then :func:`write_publishes`: if the first
    raises, nothing was written; if the second does, see there.
    """
    write_publishes(ready_to_publish(channel), channel.channel_id, items)


def ready_to_publish(channel: amqp.Channel) -> amqp.Connection:
    """``basic_publish``'s checks before it writes; returns the channel's connection.

    A closed connection raises ``RecoverableConnectionError``; a pending
    ``connection.blocked`` (or a close) from RabbitMQ is read first, raising
    as py-amqp's ``drain_events`` does. Nothing is written here.
    """
    connection = channel.connection
    if not connection:
        raise RecoverableConnectionError("basic_publish: connection closed")
    if connection.client_properties.get("capabilities", {}).get("connection.blocked", False):
        try:
            connection.drain_events(timeout=0)
        except TimeoutError:
            pass
    return connection


def write_publishes(connection: amqp.Connection, channel_id: int, items: Sequence[TaskMessage]) -> None:
    """Write the frames of ``items`` (:func:`encode_publishes`) in one transport write.

    A write timeout raises ``RecoverableConnectionError`` as in
    ``basic_publish``, socket errors come through as the transport raises
    them. Then the socket took an unknown part of the buffer: any message
    but the last may have reached RabbitMQ, the last did not (its final byte
    was never sent). The caller must be the only writer on the connection
    (py-amqp's frame lock is private to its own writer).
    """
    data = encode_publishes(channel_id, connection.frame_max, items)
    try:
        connection.transport.write(data)
    except TimeoutError as exc:
        # As basic_publish: a write timeout means a dead socket, a connection error for kombu and fleet's retry.
        raise RecoverableConnectionError("basic_publish: timed out") from exc
    # frame_writer counts one per message; heartbeat_tick takes any change as traffic.
    connection.bytes_sent += len(items)
