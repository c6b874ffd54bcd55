"""Bearer-token auth: with ``FLEET_API_TOKEN`` set, every route needs it except the open ones.

Open: liveness, readiness, ``/metrics`` and the fleet health check, so probes
and Prometheus work without a secret. The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, request

from fleet.api.errors import ApiError
from fleet.api.state import api_state

F = TypeVar("F", bound=Callable[..., object])
OPEN_ATTRIBUTE = "fleet_open"


def open_route(view: F) -> F:
    """Mark a view as served without the token."""
    setattr(view, OPEN_ATTRIBUTE, True)
    return view


def _supplied_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_token() -> None:
    token = api_state().settings.api_token
    if not token or request.endpoint is None:  # no token configured, or a 404/405 answered anyway
        return
    if getattr(current_app.view_functions.get(request.endpoint), OPEN_ATTRIBUTE, False):
        return
    supplied = _supplied_token()
    if supplied is None or not hmac.compare_digest(supplied.encode(), token.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid bearer token" if supplied is None else "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="fleet"'},
        )


def install_auth(app: Flask) -> None:
    app.before_request(require_token)
