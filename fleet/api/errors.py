"""Every error the API answers, in one JSON shape, and the handlers that guarantee it.

Shape (``Error`` in the OpenAPI document)::

    {"error": "<stable code>", "message": "<for humans>", "status": <http status>,
     "details": [{"field": "<dotted path>", "message": "..."}]}

plus ``"outcome"`` on a 503 from publishing (see :func:`unavailable`).

No HTML error page and no traceback ever reaches a client; an unexpected
exception is logged here and answered as a plain 500 ``internal_error``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("fleet.api")

#: HTTP status -> stable error code for errors raised by Flask/werkzeug themselves.
HTTP_CODES = {
    400: "malformed_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}
#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER = 5


class ApiError(Exception):
    """An error answered to the client as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        outcome: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}
        self.outcome = outcome


def unavailable(message: str, code: str = "broker_unavailable", outcome: str | None = None) -> ApiError:
    """A 503 with Retry-After: the client should retry.

    ``outcome`` says what became of a publish: ``"none"`` (nothing was
    accepted) or ``"unknown"`` (written to the broker, never confirmed: it may
    still run; only a retry with the same Idempotency-Key is safe).
    """
    return ApiError(503, code, message, headers={"Retry-After": str(RETRY_AFTER)}, outcome=outcome)


def error_response(error: ApiError) -> Response:
    body: dict[str, Any] = {
        "error": error.code,
        "message": error.message,
        "status": error.status,
        "details": error.details,
    }
    if error.outcome is not None:
        body["outcome"] = error.outcome
    response = jsonify(body)
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _from_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    message = {
        404: "no such route",
        405: "method not allowed on this route",
        413: "request body too large",
    }.get(status, exc.description or exc.name)
    return error_response(ApiError(status, HTTP_CODES.get(status, f"http_{status}"), message, headers=headers))


def _from_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error while serving a request")
    return error_response(ApiError(500, "internal_error", "internal error; the request was logged"))


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(HTTPException, _from_http)
    app.register_error_handler(Exception, _from_unexpected)
