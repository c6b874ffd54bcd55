"""No message stops a worker: whatever arrives on a work queue runs or is dead-lettered.

A fixed corpus of hostile shapes (tests/corpus/hostile_messages.json) on classic and
quorum queues, and a hypothesis fuzz of headers, properties and bodies, each against
one live ``fleet worker default`` on a private vhost, with healthy tasks published
around the hostile ones.
"""

from __future__ import annotations

import json
import string
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.celery_app import FleetCelery
from fleet.pools import metrics_port
from tests.support.apps import app_for
from tests.support.hostile import (
    HEALTHY_TASK,
    VALID_BODY,
    DeadLetters,
    Hostile,
    account,
    corpus,
    from_corpus,
    publish,
    valid_headers,
)
from tests.support.metrics import wait_for_scrape
from tests.support.peers import free_port_block
from tests.support.processes import FleetProcess, start_worker


def _healthy(app: FleetCelery, count: int) -> list[Any]:
    return [app.send_task(HEALTHY_TASK, (n,)) for n in range(count)]


def _assert_healthy_done(healthy: list[Any], dead: DeadLetters) -> None:
    for result in healthy:
        assert result.get(timeout=60)["source_id"] is not None
    assert not {result.id for result in healthy} & {str((m.headers or {}).get("id")) for m in dead.messages.values()}, (
        "a healthy task was dead-lettered"
    )


def _assert_alive(worker: FleetProcess) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, f"the worker exited:\n{worker.log()[-3000:]}"
    assert "Unrecoverable error" not in worker.log()


@pytest.fixture
def hostile_env(private_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``private_env`` with metrics ports and a metrics directory of its own."""
    return {**private_env, "FLEET_METRICS_PORT": str(free_port_block(8)), "FLEET_METRICS_DIR": str(tmp_path / "m")}


@pytest.fixture
def hostile_app(hostile_env: dict[str, str], celery_app: FleetCelery) -> Iterator[FleetCelery]:
    with app_for(hostile_env) as app:
        yield app


@pytest.fixture
def default_worker(hostile_env: dict[str, str], log_dir: Path) -> Iterator[FleetProcess]:
    worker = start_worker("default", hostile_env, log_dir)
    yield worker
    worker.stop()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_corpus_is_dead_lettered_or_run_and_the_worker_lives(
    queue_type: str, hostile_env: dict[str, str], log_dir: Path, celery_app: FleetCelery
) -> None:
    env = {**hostile_env, "FLEET_QUEUE_TYPE": queue_type}
    entries = corpus()
    messages = [from_corpus(entry) for entry in entries]
    worker = start_worker("default", env, log_dir)
    try:
        with app_for(env) as app:
            url = app.fleet_settings.broker_url
            dead = DeadLetters(url)
            # Healthy tasks before, between (in the same prefetch window) and after the hostile ones.
            healthy = _healthy(app, 4)
            for start in range(0, len(messages), 4):
                publish(url, messages[start : start + 4])
                healthy += _healthy(app, 1)
            healthy += _healthy(app, 4)
            account(app, dead, messages)
            _assert_healthy_done(healthy, dead)
            _assert_alive(worker)

            rejected = {h.tag for entry, h in zip(entries, messages, strict=True) if entry["expect"] == "dlq"}
            letters = dead.wait_for(rejected)
            for entry, hostile in zip(entries, messages, strict=True):
                if entry["expect"] == "dlq":
                    assert hostile.tag in letters, f"{entry['name']!r} was not dead-lettered"
                    assert letters[hostile.tag].headers["x-death"][0]["reason"] == "rejected"
                    # unrun; an unknown task's FAILURE (NotRegistered) is stored for whoever waits on it
                    state = "FAILURE" if entry["reason"] == "unknown_task" else "PENDING"
                    assert _state(app, hostile) == state, f"{entry['name']!r} ran"
                else:
                    assert _state(app, hostile) != "PENDING", f"{entry['name']!r} did not run"
            expected = Counter(entry["reason"] for entry in entries if entry["expect"] == "dlq")
            port = metrics_port(int(env["FLEET_METRICS_PORT"]), "default")
            scrape = wait_for_scrape(
                port, lambda s: s.total("fleet_messages_rejected_total", queue="default") >= expected.total()
            )
            for reason, count in expected.items():
                assert scrape.total("fleet_messages_rejected_total", queue="default", reason=reason) == count, reason
            log = worker.log()
            for reason in expected:
                assert f"reason={reason}" in log
    finally:
        worker.stop()


def _state(app: FleetCelery, hostile: Hostile) -> str:
    task_id = hostile.task_id
    return app.AsyncResult(task_id).state if isinstance(task_id, str) and task_id else "PENDING"


# ---- the fuzz -------------------------------------------------------------------------------------------

_text = st.text(max_size=20)
_short = st.text(alphabet=string.printable, max_size=30)
#: what an AMQP table value may be (py-amqp encodes each of these)
_amqp_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
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
            args = draw(_json_value) if part == "args" else args
            kwargs = draw(_json_value) if part == "kwargs" else kwargs
            embed = draw(_embed) if part == "embed" else VALID_BODY[2]
            body = json.dumps([args, kwargs, embed]).encode()
        elif shape == "json":
            body = json.dumps(draw(_json_value)).encode()
        else:
            body = draw(st.binary(max_size=40))
    return Hostile("fuzz: " + ",".join(sorted(broken)), body, headers, properties, tag)


@settings(
    max_examples=100,
    deadline=None,
    database=None,  # no .hypothesis directory in the tree; a failure prints its example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(hostile_messages(), min_size=1, max_size=6))
def test_fuzzed_messages_never_stop_the_worker(
    batch: list[Hostile], hostile_app: FleetCelery, default_worker: FleetProcess
) -> None:
    url = hostile_app.fleet_settings.broker_url
    dead = DeadLetters(url)
    publish(url, batch)
    healthy = _healthy(hostile_app, 2)
    account(hostile_app, dead, batch)
    _assert_healthy_done(healthy, dead)
    _assert_alive(default_worker)
