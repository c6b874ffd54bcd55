"""Probes and metrics, open without the token: liveness, readiness (broker reachable), /metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from fleet.api.auth import open_route
from fleet.api.errors import RETRY_AFTER
from fleet.api.schemas import Health
from fleet.api.state import api_state
from fleet.metrics.api import render
from fleet.publish import BrokerUnavailable

bp = Blueprint("health", __name__)


@bp.get("/")
@open_route
def index() -> Response:
    """Guide 002's first route, as it answers; the API itself is described at /api/openapi.json."""
    return Response("Hello, World!", mimetype="text/plain")


@bp.get("/healthz")
@open_route
def healthz() -> Response:
    """The process serves requests; says nothing about the broker (restarting would not help it)."""
    return jsonify(Health(status="ok").model_dump(exclude_none=True))


@bp.get("/readyz")
@open_route
def readyz() -> Response:
    """Ready when RabbitMQ answers a round trip within the publish timeout."""
    try:
        api_state().publisher.ping()
    except BrokerUnavailable:
        response = jsonify(Health(status="unavailable", broker=False).model_dump())
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response
    return jsonify(Health(status="ready", broker=True).model_dump())


@bp.get("/metrics")
@open_route
def metrics() -> Response:
    body, content_type = render(api_state().settings.api_metrics_path)
    return Response(body, content_type=content_type)
