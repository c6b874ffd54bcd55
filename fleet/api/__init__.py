"""The enqueue API: blueprints, schemas, the confirming publisher, idempotency, errors, OpenAPI.

``app.py`` builds the Flask app and registers :data:`BLUEPRINTS`; :func:`install`
adds what every route shares (state, auth, JSON errors, request metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, Response, request

from fleet.api import enqueue_routes, health, monitoring, openapi, ops_routes, task_status
from fleet.api.auth import install_auth
from fleet.api.errors import register_error_handlers
from fleet.api.state import attach
from fleet.metrics.api import api_metrics, initialise, method_label
from fleet.settings import Settings
from queues import WORK_QUEUES

if TYPE_CHECKING:
    from fleet.celery_app import FleetCelery

BLUEPRINTS = (health.bp, enqueue_routes.bp, task_status.bp, monitoring.bp, ops_routes.bp, openapi.bp)


def install(app: Flask, settings: Settings, celery: FleetCelery) -> None:
    """Shared state, bearer auth, JSON errors and per-request metrics."""
    state = attach(app, settings, celery)
    register_error_handlers(app)
    install_auth(app)

    @app.after_request
    def count_request(response: Response) -> Response:
        if not state.started:  # series exist at zero from the first request on (never in Celery workers)
            initialise(WORK_QUEUES, sorted(state.public_tasks))
            state.started = True
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        api_metrics().requests.labels(route, method_label(request.method), str(response.status_code)).inc()
        return response
