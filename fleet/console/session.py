"""Who is logged in to the console, and the CSRF check its forms pass.

The login cookie holds the token itself (HttpOnly, so no script reads it; SameSite=Strict, so no
other site's page sends it; Secure behind HTTPS), checked like a bearer token on every request.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Response, request

from fleet.api.auth import ANONYMOUS, Caller, from_loopback, identify, tokens_configured
from fleet.settings import Settings

LOGIN_COOKIE = "fleet_console"
CSRF_COOKIE = "fleet_csrf"
CSRF_FIELD = "csrf"
PATH = "/console"


def current_caller(settings: Settings) -> Caller | None:
    """The logged-in caller, ANONYMOUS when no token is configured (development), or None."""
    if not tokens_configured(settings):
        return ANONYMOUS
    return identify(settings, request.cookies.get(LOGIN_COOKIE))


def may_operate(caller: Caller) -> bool:
    """Whether the console shows action buttons (and accepts actions) for ``caller``."""
    return "operate" in caller.scopes and (caller is not ANONYMOUS or from_loopback())


def _cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=PATH, httponly=True, samesite="Strict", secure=request.is_secure
    )


def log_in(response: Response, token: str) -> None:
    _cookie(response, LOGIN_COOKIE, token, max_age=12 * 3600)


def log_out(response: Response) -> None:
    response.delete_cookie(LOGIN_COOKIE, path=PATH, httponly=True, samesite="Strict", secure=request.is_secure)


def csrf_token() -> str:
    """The value forms repeat: the CSRF cookie's, or a new one :func:`keep_csrf` sets."""
    return request.cookies.get(CSRF_COOKIE) or request.environ.setdefault("fleet.csrf", secrets.token_urlsafe(32))


def keep_csrf(response: Response) -> None:
    if CSRF_COOKIE not in request.cookies and "fleet.csrf" in request.environ:
        _cookie(response, CSRF_COOKIE, request.environ["fleet.csrf"])


def csrf_ok() -> bool:
    cookie, form = request.cookies.get(CSRF_COOKIE, ""), request.form.get(CSRF_FIELD, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), form.encode())
