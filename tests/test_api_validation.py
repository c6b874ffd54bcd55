"""The API's validation, error shapes and OpenAPI document, in process: Flask's test client and a
publisher that records instead of publishing (the fast tier: no broker, no gunicorn).

Every refused request must change nothing, so each test also checks that nothing was published.
What needs gunicorn or a broker (publishing, 503s, gunicorn's own 414/431) is in test_api.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from fleet.api.openapi import documented, routes
from tests.support.api import PureApi, assert_error, pure_api

pytestmark = pytest.mark.pure  # the fast tier: no service needed

TOKEN = "test-token-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PureApi]:
    client = pure_api(tmp_path_factory.mktemp("api"), TOKEN, FLEET_API_MAX_BODY_BYTES="65536")
    yield client
    assert client.publisher.sends == [], "a refused request published something"


def test_error_400_malformed_json(api: PureApi) -> None:
    for raw in (b"{", b'{"to": NaN}', b"\xff\xfe{}"):
        response = api.post("/api/send-email", data=raw, headers={"Content-Type": "application/json"})
        assert_error(response, 400, "malformed_json")


def test_error_401_missing_or_bad_token(api: PureApi) -> None:
    payload = {"to": "a@b.test", "subject": "s", "body": "b"}
    missing = api.client.post("/api/send-email", json=payload)
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    bad = api.client.post("/api/send-email", json=payload, headers={"Authorization": "Bearer wrong"})
    assert_error(bad, 401, "unauthorized")
    assert_error(api.client.get("/api/openapi.json"), 401, "unauthorized")


def test_error_404_unknown_route_and_unknown_task(api: PureApi) -> None:
    assert_error(api.get("/api/no-such-thing"), 404, "not_found")
    assert_error(api.post("/api/tasks", {"task": "tasks.no_such_task"}), 404, "unknown_task", "task")
    assert_error(api.post("/api/tasks", {"task": "celery.chord_unlock"}), 404, "unknown_task", "task")


def test_error_405_wrong_method(api: PureApi) -> None:
    response = api.get("/api/send-email")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_error_413_body_too_large(api: PureApi) -> None:
    huge = {"to": "a@b.test", "subject": "s", "body": "x" * 70_000}
    assert_error(api.post("/api/send-email", huge), 413, "body_too_large")


def test_error_415_wrong_content_type(api: PureApi) -> None:
    response = api.post("/api/send-email", data=b"to=a@b.test", headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


def test_error_422_names_each_invalid_field(api: PureApi) -> None:
    assert_error(
        api.post("/api/send-email", {"to": "not-an-address", "subject": "s", "body": "b"}),
        422,
        "validation_error",
        "to",
    )
    assert_error(api.post("/api/send-email", {"to": "a@b.test", "subject": "s"}), 422, "validation_error", "body")
    assert_error(api.post("/api/send-email", [1, 2]), 422, "validation_error", "body")
    extra = {"to": "a@b.test", "subject": "s", "body": "b", "bcc": "x@y.test"}
    assert_error(api.post("/api/send-email", extra), 422, "validation_error", "bcc")
    assert_error(api.post("/api/generate-report", {"report_type": "nope"}), 422, "validation_error", "report_type")
    assert_error(api.post("/api/process-data/1", {"rows": "10"}), 422, "validation_error", "rows")
    wrong_args = {"task": "tasks.send_email", "args": ["only-one"]}
    assert_error(api.post("/api/tasks", wrong_args), 422, "validation_error", "args")
    late = {"task": "tasks.fetch_data", "args": [1], "countdown": 10**8}
    assert_error(api.post("/api/tasks", late), 422, "validation_error", "countdown")
    assert_error(
        api.post("/api/tasks", {"task": "tasks.fetch_data", "queue": "nope"}), 422, "validation_error", "queue"
    )
    batch = {"tasks": [{"task": "tasks.fetch_data", "args": [1]}, {"task": "tasks.nope"}]}
    assert_error(api.post("/api/tasks/batch", batch), 422, "unknown_task", "tasks.1.task")
    assert_error(api.get("/api/task-status/" + "x" * 200), 422, "validation_error", "task_id")
    bad_key = {"Idempotency-Key": "é"}
    response = api.post("/api/send-email", {"to": "a@b.test", "subject": "s", "body": "b"}, headers=bad_key)
    assert response.status_code in (400, 422), response.get_data(as_text=True)


def test_openapi_is_served_as_json(api: PureApi) -> None:
    document = api.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert "/api/send-email" in document["paths"]
    json.dumps(document)


def test_the_recorder_sees_an_accepted_publish_and_no_refused_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The fixture's "nothing published" check can fail: a valid request does reach the publisher."""
    api = pure_api(tmp_path_factory.mktemp("recorder"), TOKEN)
    assert_error(api.post("/api/send-email", {"to": "a@b.test", "subject": "s"}), 422, "validation_error", "body")
    assert api.publisher.sends == []
    response = api.post("/api/send-email", {"to": "a@b.test", "subject": "s", "body": "b"})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["task"] == "tasks.send_email" and len(api.publisher.sends) == 1


def test_every_route_is_documented(api: PureApi) -> None:
    """Every JSON route; the console's HTML pages (fleet.console) are not part of the API document."""
    app = api.client.application
    served = {
        (method.lower(), _template(rule.rule))
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith("console.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == {(op.method, route.path) for op, route in documented(routes(app.url_map.iter_rules()))}


def _template(rule: str) -> str:
    """Flask's '/x/<int(max=1):id>' as OpenAPI's '/x/{id}'."""
    parts = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].split(":")[-1] + "}"
        parts.append(part)
    return "/".join(parts)


def test_argument_check_is_per_call_shape(api: PureApi) -> None:
    """The signature check is cached per (task, positional count, keyword names): a shape that
    fitted once must not let a different shape through, and a misfit stays a 422 when repeated."""
    for _ in range(2):
        assert_error(
            api.post("/api/tasks", {"task": "tasks.send_email", "args": ["x"]}), 422, "validation_error", "args"
        )
        bad_kw = {"task": "tasks.fetch_data", "args": [1], "kwargs": {"nope": 1}}
        assert_error(api.post("/api/tasks", bad_kw), 422, "validation_error", "args")
        too_many = {"task": "tasks.fetch_data", "args": [1, 2, 3, 4, 5, 6, 7, 8]}
        assert_error(api.post("/api/tasks", too_many), 422, "validation_error", "args")
