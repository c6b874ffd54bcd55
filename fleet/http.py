"""Outbound HTTP for tasks, with each failure classified as transient or permanent.

Transient failures (connection errors, timeouts, 429, 5xx) are worth a retry;
permanent ones (other 4xx) are not: retrying a bad request only repeats it.
"""

from __future__ import annotations

from typing import Any

import requests

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransientHTTPError(Exception):
    """The peer may succeed later."""


class PermanentHTTPError(Exception):
    """The peer refused the request itself; retrying will not help."""

    def __init__(self, message: str, status_code: int = 0) -> None:
        super().__init__(message, status_code)  # both in args, so the result backend can rebuild it
        self.status_code = status_code

    def __str__(self) -> str:
        return str(self.args[0])


def request_json(method: str, url: str, timeout: float, **kwargs: Any) -> tuple[int, Any]:
    """Make one HTTP request; return ``(status, body)`` (JSON when it parses, else text)."""
    try:
        response = requests.request(method, url, timeout=timeout, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientHTTPError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
    if response.status_code in TRANSIENT_STATUS:
        raise TransientHTTPError(f"{method} {url}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise PermanentHTTPError(f"{method} {url}: HTTP {response.status_code}", response.status_code)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body
