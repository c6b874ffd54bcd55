"""Property-based: schemathesis drives the live API from its own /api/openapi.json.

Valid and invalid inputs (bounded examples per operation) must never produce a
5xx nor a response that contradicts the document (status, content type,
headers, body schema). The API here publishes into a vhost of its own that no
worker consumes, so the generated tasks are confirmed by RabbitMQ but never run.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fleet.api import BLUEPRINTS
from fleet.api.openapi import Operation, Route, documented, routes
from fleet.testing.broker import Vhost
from tests.support.api import ApiServer

TOKEN = "schema-token-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 40  # per operation and generation mode: keeps the run near a minute


@pytest.fixture(scope="module")
def schema_api(fleet_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    vhost = Vhost().create()
    var_dir = tmp_path_factory.mktemp("api-schema-var")
    env = {
        **fleet_env,
        "CELERY_BROKER_URL": vhost.url,
        "FLEET_VAR_DIR": str(var_dir),
        "FLEET_API_INSPECT_TIMEOUT": "0.2",
        "FLEET_API_MAX_BODY_BYTES": "65536",
    }
    server = ApiServer(env, Path(var_dir) / "log", token=TOKEN).start()
    yield server
    server.stop()
    vhost.delete()


@pytest.fixture(scope="module")
def api_schema(schema_api: ApiServer) -> schemathesis.schemas.BaseSchema:
    schema = schemathesis.openapi.from_url(schema_api.url("/api/openapi.json"), headers=AUTH, timeout=10)
    schema.config.update(base_url=schema_api.base_url, headers=AUTH)
    schema.config.generation.update(max_examples=MAX_EXAMPLES)
    # An invalid body larger than the cap is refused with 413 before it is even parsed.
    schema.config.checks.negative_data_rejection.expected_statuses = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
    return schema


#: Operations whose schema cannot say everything the server checks, and the check that therefore cannot hold.
#: The generic enqueue's args must fit the chosen task's signature (422 otherwise), and the fleet health
#: answers its documented 503 while no worker consumes this vhost. Deleting every dead letter of a queue takes
#: its name again in "confirm", which must equal the path's queue (a schema cannot say so: 422 otherwise).
EXCLUDED = {
    ("delete", "/api/ops/dead-letters/{queue}"): [positive_data_acceptance],
    ("post", "/api/tasks"): [positive_data_acceptance],
    ("post", "/run-task"): [positive_data_acceptance],
    ("post", "/api/tasks/batch"): [positive_data_acceptance],
    ("get", "/api/monitoring/health"): [not_a_server_error],
}
VALID_KEY = re.compile(r"[!-~]([ -~]{0,253}[!-~])?")


def _bare_routes() -> list[tuple[Operation, Route]]:
    """The blueprints' routes, from an app with nothing else (no settings, no Celery): for collection."""
    app = Flask("routes")
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return documented(routes(app.url_map.iter_rules()))


CASES = [
    (op.method, route.path, mode)
    for op, route in _bare_routes()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or op.body is not None or route.params or op.idempotent
]


@pytest.mark.parametrize("method,path,mode", CASES)
def test_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.schemas.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    excluded = EXCLUDED.get((method, path), [])

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: schemathesis.Case) -> None:
        headers = dict(AUTH)
        if VALID_KEY.fullmatch((case.headers or {}).get("Idempotency-Key", "")):
            # Generated keys repeat across different bodies, which is a (documented) 422; keep valid ones unique.
            headers["Idempotency-Key"] = str(uuid.uuid4())
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    conforms()
