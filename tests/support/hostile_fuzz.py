"""Hypothesis strategies for hostile task messages: Celery protocol 2 with some parts made arbitrary."""

from __future__ import annotations

import json
import string
import uuid
from typing import Any

from hypothesis import strategies as st

from tests.support.hostile import VALID_BODY, Hostile, nest, valid_headers

_text = st.text(max_size=20)
_short = st.text(alphabet=string.printable, max_size=30)
#: what an AMQP table value may be (py-amqp encodes each of these)
_amqp_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),  # RabbitMQ closes the connection on a non-finite double
    _text,
    st.binary(max_size=20),
)
_amqp_value = st.recursive(
    _amqp_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_short, inner, max_size=3)),
    max_leaves=6,
)
_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-50, 50), st.floats(allow_nan=False, allow_infinity=False), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=8,
)
_moments = st.sampled_from(["", "2020-01-01T00:00:00", "2020-01-01T00:00:00+05:00", "2020-01-01", "garbage", "99999"])
_header_values: dict[str, Any] = {
    "eta": st.one_of(_moments, _amqp_value),
    "expires": st.one_of(_moments, _amqp_value),
    "retries": st.one_of(st.integers(min_value=-2, max_value=5), _amqp_value),
    "timelimit": st.one_of(
        st.lists(st.one_of(st.none(), st.integers(-1, 30), st.floats(0, 30), _text), max_size=3), _amqp_value
    ),
    "ignore_result": st.one_of(st.just(False), _amqp_value.filter(lambda v: v is not True)),
}
_embed = st.one_of(
    st.just(VALID_BODY[2]),
    st.dictionaries(
        st.sampled_from(["callbacks", "errbacks", "chain", "chord", "other"]),
        st.one_of(st.none(), st.lists(st.dictionaries(_text, _json_value, max_size=2), max_size=2), _json_value),
        max_size=4,
    ),
    _json_value,
)


#: one list nested 1 to 950 deep: deep enough to defeat pickle, shallow enough to decode

_nested = st.integers(1, 950).map(lambda depth: [nest(depth)])

#: a task message has three parts; each example breaks some of them and leaves the others valid
PARTS = ("headers", "properties", "body")
#: arguments tasks.fetch_data(source_id, records=100) may get: small (a huge ``records`` would run for minutes)
_argument = st.one_of(st.integers(-5, 50), st.none(), _text)


@st.composite
def hostile_messages(draw: st.DrawFn) -> Hostile:
    """A protocol-2 task message with some of its parts (headers, properties, body) made arbitrary."""
    broken = draw(st.sets(st.sampled_from(PARTS)))
    tag = str(uuid.uuid4())
    # The id is unique (the tag, maybe with arbitrary text after it) or invalid, so a run is attributable.
    valid_id = st.one_of(st.just(tag), _text.map(lambda suffix: tag + suffix))
    headers: dict[str, Any] | None = valid_headers(tag)
    headers["id"] = draw(st.one_of(valid_id, _amqp_value) if "headers" in broken else valid_id)
    if "headers" in broken:
        for name in draw(st.sets(st.sampled_from(sorted(headers)), min_size=1, max_size=3)):
            if draw(st.booleans()):
                headers.pop(name)
            else:
                headers[name] = draw(_header_values.get(name, _amqp_value))
        if draw(st.integers(0, 9)) == 0:
            headers = None
    if headers is not None:  # extra headers of any type are fine
        headers.update(draw(st.dictionaries(_short.filter(lambda k: k not in headers), _amqp_value, max_size=2)))

    properties: dict[str, Any] = {
        "content_type": "application/json",
        "content_encoding": draw(st.sampled_from(["utf-8", "UTF-8", "utf8", None])),
        "priority": draw(st.one_of(st.none(), st.integers(0, 255))),
        "correlation_id": draw(st.one_of(st.none(), _text)),
        "reply_to": draw(st.one_of(st.none(), _text)),
        "type": draw(st.one_of(st.none(), _text)),
    }
    if "properties" in broken:
        types = [None, "text/plain", "application/x-python-serialize", "application/data", "application/text"]
        properties["content_type"] = draw(st.one_of(st.sampled_from(types), _short))
        properties["content_encoding"] = draw(st.one_of(st.sampled_from([None, "binary", "gzip", "latin-1"]), _short))

    args = draw(st.lists(_argument, max_size=3))
    kwargs = draw(st.dictionaries(st.sampled_from(["source_id", "records", "other"]), _argument, max_size=2))
    body = json.dumps([args, kwargs, VALID_BODY[2]]).encode()
    if "body" in broken:
        shape = draw(st.sampled_from(["parts", "json", "bytes"]))
        if shape == "parts":
            part = draw(st.sampled_from(["args", "kwargs", "embed"]))
            args = draw(st.one_of(_json_value, _nested)) if part == "args" else args
            kwargs = draw(_json_value) if part == "kwargs" else kwargs
            embed = draw(_embed) if part == "embed" else VALID_BODY[2]
            body = json.dumps([args, kwargs, embed]).encode()
        elif shape == "json":
            body = json.dumps(draw(_json_value)).encode()
        else:
            body = draw(st.binary(max_size=40))
    return Hostile("fuzz: " + ",".join(sorted(broken)), body, headers, properties, tag)
