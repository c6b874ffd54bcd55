"""Tasks that talk to flaky peers: retried with backoff where that is safe."""

from __future__ import annotations

import decimal
from typing import Any

from celery import Task, shared_task

from fleet.http import PermanentHTTPError, TransientHTTPError, request_json
from fleet.retries import retry_later
from fleet.settings import Settings

CURRENCIES = frozenset({"USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD"})


@shared_task(bind=True, name="tasks.call_external_api", max_retries=5)
def call_external_api(self: Task, endpoint: str, payload: Any = None, method: str | None = None) -> dict[str, Any]:
    """Call an HTTP API (the guide's ``endpoint, payload``: POSTed as JSON; no payload: GET);
    transient failures retry with exponential backoff and jitter (at most 5 retries), a 4xx fails at once."""
    settings: Settings = self.app.fleet_settings
    method = method or ("GET" if payload is None else "POST")
    try:
        status, body = request_json(method, endpoint, settings.http_timeout, json=payload)
    except TransientHTTPError as exc:
        raise retry_later(self, exc) from exc
    return {"status_code": status, "body": body, "attempts": self.request.retries + 1}


@shared_task(bind=True, name="tasks.send_webhook", max_retries=3)
def send_webhook(self: Task, url: str, event_data: Any) -> dict[str, Any]:
    """POST ``event_data`` to ``url``, retrying by hand; after the last retry it returns
    ``{"status": "failed", ...}`` instead of raising, so callers see one outcome shape."""
    settings: Settings = self.app.fleet_settings
    attempts = self.request.retries + 1
    try:
        status, _ = request_json("POST", url, settings.http_timeout, json=event_data)
    except TransientHTTPError as exc:
        if self.request.retries < self.max_retries:
            raise retry_later(self, exc) from exc
        return {"status": "failed", "url": url, "attempts": attempts, "error": str(exc)}
    except PermanentHTTPError as exc:
        return {"status": "failed", "url": url, "attempts": attempts, "error": str(exc)}
    return {"status": "delivered", "url": url, "attempts": attempts, "status_code": status}


class PaymentValidationError(ValueError):
    """The payment itself is invalid; no retry can fix it."""


def validate_payment(order_id: str, amount: str | float, currency: str) -> decimal.Decimal:
    if not isinstance(order_id, str | int) or not str(order_id) or len(str(order_id)) > 64:
        raise PaymentValidationError("order_id must be 1 to 64 characters")
    try:
        value = decimal.Decimal(str(amount))
    except decimal.InvalidOperation:
        raise PaymentValidationError(f"amount {amount!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise PaymentValidationError("amount must be above 0")
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise PaymentValidationError("amount has more than 2 decimal places")
    if currency not in CURRENCIES:
        raise PaymentValidationError(f"currency must be one of {', '.join(sorted(CURRENCIES))}")
    return value


@shared_task(bind=True, name="tasks.process_payment", max_retries=5, throws=(PaymentValidationError,))
def process_payment(
    self: Task, order_id: str, amount: str | float, payment_method: Any = "card", currency: str = "EUR"
) -> dict[str, Any]:
    """Charge a payment through the gateway: the guide's ``(order_id, amount, payment_method)``.

    Validation errors and gateway refusals (4xx) are never retried; transient
    gateway errors are. The gateway gets ``order_id`` as its Idempotency-Key,
    so a retry or a redelivery never charges twice. ``currency`` is fleet's
    addition (keyword, EUR by default).
    """
    settings: Settings = self.app.fleet_settings
    value = validate_payment(order_id, amount, currency)
    key = str(order_id)
    try:
        status, body = request_json(
            "POST",
            settings.payment_gateway_url,
            settings.http_timeout,
            json={"order_id": key, "amount": str(value), "currency": currency, "payment_method": payment_method},
            headers={"Idempotency-Key": key},
        )
    except TransientHTTPError as exc:
        raise retry_later(self, exc) from exc
    except PermanentHTTPError as exc:
        raise PaymentValidationError(f"gateway refused payment {key}: {exc}") from exc
    transaction = body.get("id") if isinstance(body, dict) else None
    return {
        "status": "success",
        "order_id": order_id,
        "amount": str(value),
        "transaction_id": transaction or f"txn_{key}",
        "currency": currency,
        "gateway": body,
    }
