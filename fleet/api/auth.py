"""Bearer tokens with scopes: who may read, operate or enqueue, and the name their actions are logged under.

``FLEET_API_TOKENS="name:scope:token,..."`` gives each client its own token and scope
(``read``: every ops GET; ``operate``: read, and act: replay, delete, pause, cancel;
``enqueue``: the enqueue routes and the status of what it sent). ``FLEET_API_TOKEN`` stays
one token with every scope. A missing or unknown token gets 401, a token of the wrong scope
403. Every configured token is compared, each in constant time, so timing tells nothing.

Open: liveness, readiness, ``/metrics`` and the fleet health check, so probes and Prometheus
work without a secret; the console's pages check the same tokens from their login cookie.

With no token configured at all (development only: production refuses to start,
fleet.settings) every route is open as before, under the name ``anonymous``, except that
actions are answered only to clients on this machine (loopback), so a development API
bound to a public address cannot be operated by strangers.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import Flask, current_app, g, request

from fleet.api.errors import ApiError
from fleet.api.state import api_state
from fleet.settings import TOKEN_SCOPES, Settings

F = TypeVar("F", bound=Callable[..., object])
OPEN_ATTRIBUTE = "fleet_open"
SCOPES_ATTRIBUTE = "fleet_scopes"
#: what a view of each blueprint needs when it says nothing itself (others: any valid token)
BLUEPRINT_SCOPES = {"tasks": frozenset({"enqueue"}), "ops": frozenset({"read"})}
#: blueprints whose views check the tokens themselves (the console reads its login cookie)
SELF_AUTHENTICATING = frozenset({"console"})
#: a scope and the scopes it includes
IMPLIES = {"operate": frozenset({"operate", "read"})}

audit_log = logging.getLogger("fleet.audit")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the token's name and what it may do."""

    name: str
    scopes: frozenset[str]

    def may(self, needed: frozenset[str]) -> bool:
        return bool(self.scopes & needed)


#: every request when no token is configured (development only)
ANONYMOUS = Caller("anonymous", frozenset(TOKEN_SCOPES))


def open_route(view: F) -> F:
    """Mark a view as served without the token."""
    setattr(view, OPEN_ATTRIBUTE, True)
    return view


def needs(*scopes: str) -> Callable[[F], F]:
    """Mark a view as served to callers with one of ``scopes`` (an action: ``needs("operate")``)."""

    def mark(view: F) -> F:
        setattr(view, SCOPES_ATTRIBUTE, frozenset(scopes))
        return view

    return mark


def tokens_configured(settings: Settings) -> bool:
    return bool(settings.all_tokens)


def identify(settings: Settings, supplied: str | None) -> Caller | None:
    """The caller ``supplied`` names (its scopes merged across entries), or None for no valid token.

    Every entry is compared, whatever matched before: the time taken does not depend on which.
    """
    name, scopes = None, set()
    candidate = (supplied or "").encode()
    for entry in settings.all_tokens:
        if hmac.compare_digest(candidate, entry.token.encode()) and supplied:
            name = name or entry.name
            scopes |= IMPLIES.get(entry.scope, {entry.scope})
    return Caller(name, frozenset(scopes)) if name else None


def _supplied_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def from_loopback() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def needed_scopes(view: object, blueprint: str | None) -> frozenset[str] | None:
    """What ``view`` needs, or None for any valid token."""
    return getattr(view, SCOPES_ATTRIBUTE, None) or BLUEPRINT_SCOPES.get(blueprint or "")


def check(caller: Caller | None, needed: frozenset[str] | None, settings: Settings) -> Caller:
    """The caller if it may call a view needing ``needed``; else the 401 or 403 ApiError."""
    if caller is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid bearer token" if _supplied_token() is None else "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="fleet"'},
        )
    if needed is not None and not caller.may(needed):
        raise ApiError(
            403,
            "forbidden",
            f"token {caller.name!r} ({', '.join(sorted(caller.scopes))}) may not do this: it needs "
            f"{' or '.join(sorted(needed))}",
        )
    if caller is ANONYMOUS and needed and "operate" in needed and not from_loopback():
        raise ApiError(
            401,
            "unauthorized",
            "no API tokens are configured: actions are answered only on this machine; set FLEET_API_TOKENS",
            headers={"WWW-Authenticate": 'Bearer realm="fleet"'},
        )
    return caller


def require_token() -> None:
    if request.endpoint is None:  # a 404/405 answered anyway
        return
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, OPEN_ATTRIBUTE, False) or request.blueprint in SELF_AUTHENTICATING:
        return
    settings = api_state().settings
    caller = identify(settings, _supplied_token()) if tokens_configured(settings) else ANONYMOUS
    g.fleet_caller = check(caller, needed_scopes(view, request.blueprint), settings)


def caller() -> Caller:
    """Who sent the current request (set by :func:`require_token` or the console's login)."""
    return g.get("fleet_caller", ANONYMOUS)


def audit(action: str, **details: object) -> None:
    """Log an operator action with the name of the token that took it."""
    words = " ".join(f"{key}={value}" for key, value in details.items())
    audit_log.warning("%s by token %r: %s", action, caller().name, words)


def install_auth(app: Flask) -> None:
    app.before_request(require_token)
