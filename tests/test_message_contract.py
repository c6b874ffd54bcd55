"""Contract with the pinned Celery and py-amqp: what fleet's message builder and publish calls rely on.

fleet builds task messages with Celery's ``as_task_v2`` and writes them with
py-amqp's serialization, the bytes of its class-level ``basic_publish``
(:mod:`fleet.amqp_frames`, compared byte for byte in tests/test_amqp_frames.py),
and reads confirms with its channel events (:mod:`fleet.messages`,
:mod:`fleet.publish`, :mod:`fleet.confirm_streams`), not through ``send_task``.
These tests compare, header for header and body for body, with what
``send_task`` publishes (captured on kombu's in-memory transport, no broker),
and pin the py-amqp calls, so a Celery, kombu or py-amqp upgrade that changes
either fails here, loudly, instead of in production.
"""

from __future__ import annotations

import decimal
import inspect
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import amqp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Producer
from kombu.exceptions import EncodeError
from kombu.serialization import dumps

from fleet.celery_app import FleetCelery
from fleet.messages import TaskMessages, serialize
from tests.test_publish import CALLS

pytestmark = pytest.mark.pure

#: set from the clock at build time: compared for presence and closeness, not equality
TIMED_HEADERS = {"fleet_published_at", "eta", "expires"}
#: kombu's in-memory transport bookkeeping, not part of the AMQP message
TRANSPORT_PROPERTIES = {"body_encoding", "delivery_tag", "delivery_info"}


def _celerys(app: FleetCelery, name: str, args: Any, kwargs: Any, options: dict[str, Any], task_id: str) -> Any:
    """What ``send_task`` publishes for the call, read back from the in-memory transport."""
    with Connection("memory://") as connection:
        app.send_task(name, args, kwargs, producer=Producer(connection.channel()), task_id=task_id, **options)
        channel = connection.channel()
        for queue in ("high_priority", "email", "reports", "default"):
            message = channel.basic_get(queue)
            if message is not None:
                return message
    raise AssertionError(f"send_task published {name} nowhere")


def _close(ours: Any, theirs: Any) -> bool:
    if ours is None or theirs is None:
        return ours is theirs
    if isinstance(ours, str):
        ours, theirs = datetime.fromisoformat(ours).timestamp(), datetime.fromisoformat(theirs).timestamp()
    return abs(ours - theirs) < 5


@pytest.mark.parametrize("call", CALLS, ids=[call[0] for call in CALLS])
def test_headers_properties_and_body_are_send_tasks(pure_app: FleetCelery, call: tuple) -> None:
    name, args, kwargs, options = call
    task_id = str(uuid.uuid4())
    ours = TaskMessages(pure_app)(name, args, kwargs, {**options, "task_id": task_id})
    theirs = _celerys(pure_app, name, args, kwargs, options, task_id)
    our_properties = dict(ours.message.properties)
    our_headers = our_properties.pop("application_headers")
    their_properties = {k: v for k, v in theirs.properties.items() if k not in TRANSPORT_PROPERTIES}
    # Header for header: the same names, the same values (the timed ones within seconds of each other).
    assert set(our_headers) == set(theirs.headers)
    for header, value in our_headers.items():
        if header in TIMED_HEADERS:
            assert _close(value, theirs.headers[header]), header
        else:
            assert value == theirs.headers[header], header
    # Properties: content type and encoding travel apart on the memory transport.
    assert our_properties.pop("content_type") == theirs.content_type
    assert our_properties.pop("content_encoding") == theirs.content_encoding
    if "expiration" in their_properties or "expiration" in our_properties:
        assert _close(int(our_properties.pop("expiration")) / 1000, int(their_properties.pop("expiration")) / 1000)
    assert our_properties == their_properties
    # Body for body, and the route.
    assert json.loads(ours.message.body) == json.loads(theirs.body)
    assert (ours.exchange, ours.routing_key) == (theirs.delivery_info["exchange"], theirs.delivery_info["routing_key"])


#: what a task body can hold: JSON's values, and the ones kombu's encoder turns into text
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.datetimes(timezones=st.none() | st.just(UTC)) | st.uuids() | st.decimals(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@given(args=st.lists(_VALUES, max_size=4), kwargs=st.dictionaries(st.text(), _VALUES, max_size=4))
def test_the_body_is_kombus_json_byte_for_byte(args: list[Any], kwargs: dict[str, Any]) -> None:
    """fleet serializes bodies with kombu's JSON encoder directly: the same content type, encoding and text."""
    body = (args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    assert serialize(body, "json") == dumps(body, serializer="json")


def test_a_body_json_cannot_hold_fails_as_kombu_fails() -> None:
    for body in ((object(),), {"amount": decimal.Decimal("NaN"), "set": {1}}):
        with pytest.raises(EncodeError) as ours:
            serialize(body, "json")
        with pytest.raises(EncodeError) as kombus:
            dumps(body, serializer="json")
        assert type(ours.value.args[0]) is type(kombus.value.args[0]) is TypeError
    assert serialize("text", "raw") == dumps("text", serializer="raw")  # other serializers: kombu's own


def test_as_task_v2_takes_the_arguments_the_builder_passes() -> None:
    """fleet.messages calls ``as_task_v2`` by keyword; a renamed or dropped parameter must fail here."""
    from celery.app.amqp import AMQP

    parameters = inspect.signature(AMQP.as_task_v2).parameters
    passed = {
        "countdown", "eta", "expires", "time_limit", "soft_time_limit", "reply_to", "root_id", "parent_id",
        "origin", "ignore_result", "argsrepr", "kwargsrepr",
    }  # fmt: skip
    assert passed <= set(parameters), passed - set(parameters)
    assert list(parameters)[1:5] == ["task_id", "name", "args", "kwargs"]


def test_the_py_amqp_publish_calls_fleet_relies_on() -> None:
    """The class's ``basic_publish`` writes without waiting (a confirm-mode channel swaps in a waiting one),
    takes ``(msg, exchange, routing_key, mandatory)``, and the ack/nack/return events call back as fleet expects."""
    assert amqp.Channel.basic_publish is amqp.Channel._basic_publish
    assert hasattr(amqp.Channel, "basic_publish_confirm")
    assert "self.basic_publish = self.basic_publish_confirm" in inspect.getsource(amqp.Channel.__init__)
    parameters = list(inspect.signature(amqp.Channel._basic_publish).parameters)
    assert parameters[:5] == ["self", "msg", "exchange", "routing_key", "mandatory"]

    class Events:
        events: dict[str, list] = {"basic_ack": [], "basic_nack": [], "basic_return": []}

    heard: list[tuple] = []
    Events.events["basic_ack"].append(lambda *a: heard.append(("ack", *a)))
    Events.events["basic_nack"].append(lambda *a: heard.append(("nack", *a)))
    Events.events["basic_return"].append(lambda *a: heard.append(("return", *a)))
    amqp.Channel._on_basic_ack(Events(), 7, True)
    amqp.Channel._on_basic_nack(Events(), 8, False)
    returned = amqp.Message(b"x", correlation_id="id-1")
    amqp.Channel._on_basic_return(Events(), 312, "NO_ROUTE", "", "default", returned)
    assert heard[:2] == [("ack", 7, True), ("nack", 8, False)]
    kind, exc, exchange, routing_key, message = heard[2]
    assert (kind, exchange, routing_key, message.properties["correlation_id"]) == ("return", "", "default", "id-1")
    assert isinstance(exc, amqp.ChannelError)


def test_the_pinned_versions_are_the_ones_this_contract_was_written_for() -> None:
    """A bump shows up here first: re-read the two tests above against the new release, then update the pins."""
    import celery
    import kombu

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for name, version in (("celery", celery.__version__), ("kombu", kombu.__version__), ("amqp", amqp.__version__)):
        assert f'"{name}=={version}"' in pyproject, f"{name} {version} is not the pinned version"
