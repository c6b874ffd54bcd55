"""Reading a request body: content type, JSON, then the endpoint's pydantic schema.

Each failure has its own status so a client knows what to fix: 415 for a
non-JSON content type, 400 for bytes that are not JSON (or not valid Unicode),
413 when the body passes ``FLEET_API_MAX_BODY_BYTES`` (Flask raises it while
reading), 422 naming every invalid field.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from fleet.api.errors import ApiError

M = TypeVar("M", bound=BaseModel)
#: a ``\\uD800``-``\\uDFFF`` escape: the only way a surrogate gets into decoded JSON (raw UTF-8 cannot carry one)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def raw_body() -> bytes:
    """The body bytes, after the content-type check (empty when there is none)."""
    raw = request.get_data(cache=True)
    content_type = request.headers.get("Content-Type")
    if (content_type or raw) and not _is_json(request.mimetype):
        raise ApiError(
            415, "unsupported_media_type", f"expected Content-Type: application/json, got {content_type or 'none'!r}"
        )
    return raw


def json_object() -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    raw = raw_body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
        # Lone surrogates decode from "\\ud800" escapes but cannot be stored or sent on.
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(
            422,
            "validation_error",
            "the body must be a JSON object",
            [{"field": "body", "message": f"expected an object, got {type(data).__name__}"}],
        )
    return data


def validated(model: type[M], data: dict[str, Any] | None = None) -> M:
    """``data`` (default: the request's JSON object) validated by ``model``, or a 422 naming each field."""
    data = json_object() if data is None else data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> ApiError:
    details = [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    fields = ", ".join(detail["field"] for detail in details)
    return ApiError(422, "validation_error", f"invalid fields: {fields}", details)


def field_error(field: str, message: str, status: int = 422, code: str = "validation_error") -> ApiError:
    return ApiError(status, code, f"{field}: {message}", [{"field": field, "message": message}])
