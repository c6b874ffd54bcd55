"""Development stand-ins for the peers the demo tasks talk to: an SMTP sink and a payment gateway.

``make run`` (FLEET_ENV=development) starts both under supervisord (``fleet dev smtp``,
``fleet dev gateway``) on the default FLEET_SMTP_HOST/PORT and FLEET_PAYMENT_GATEWAY_URL, so
``send_email`` and ``process_payment`` succeed on a fresh checkout instead of retrying into the
dead-letter queues. Neither is ever rendered for production, and both refuse to run there.

The SMTP sink keeps every message it accepts as an ``.eml`` file under ``var/dev/mail``. The
gateway honours ``Idempotency-Key`` as real gateways do: the same key with the same body answers
the first charge again (``Idempotent-Replayed: true``), the same key with another body is a 409.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleet.settings import Settings


class DevPeerRefused(RuntimeError):
    """A development stand-in was asked to run in production."""


def refuse_in_production(settings: Settings, what: str) -> None:
    if settings.is_production:
        raise DevPeerRefused(f"{what} is a development stand-in and does not run when FLEET_ENV=production")


def mail_dir(settings: Settings) -> Path:
    """Where the SMTP sink keeps what it received, one ``.eml`` file per message."""
    return settings.var_dir / "dev" / "mail"


# -- SMTP sink -----------------------------------------------------------------------------------------------------


class _MailDrop:
    """aiosmtpd handler: every accepted message becomes a file (written whole, then renamed)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.directory / f".{name}"
        partial.write_bytes(envelope.original_content or envelope.content)
        partial.rename(self.directory / name)
        print(f"smtp sink: kept a message from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}", flush=True)
        return "250 OK: kept"


def serve_smtp(settings: Settings) -> None:
    """Accept mail on FLEET_SMTP_HOST:FLEET_SMTP_PORT until stopped; keep each message under var/dev/mail."""
    from aiosmtpd.controller import Controller  # the `dev` extra: never needed in production

    refuse_in_production(settings, "the SMTP sink")
    directory = mail_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(_MailDrop(directory), hostname=settings.smtp_host, port=settings.smtp_port)
    controller.start()
    print(f"smtp sink: listening on {settings.smtp_host}:{settings.smtp_port}, keeping mail in {directory}", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


# -- payment gateway -----------------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Charges by idempotency key: the body that created each and the answer it got."""

    charges: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
        """(status, answer, replayed) for a charge request carrying ``key``."""
        with self.lock:
            if key in self.charges:
                first_body, answer = self.charges[key]
                if first_body != body:
                    return 409, {"error": "idempotency key reused with a different request"}, False
                return 200, answer, True
            problem = _invalid(body)
            if problem:
                return 422, {"error": problem}, False
            answer = {"charge_id": f"ch_{uuid.uuid4().hex[:16]}", "status": "succeeded", **body}
            self.charges[key] = (body, answer)
            return 200, answer, False


def _invalid(body: dict[str, Any]) -> str:
    try:
        amount = float(body.get("amount", ""))
    except (TypeError, ValueError):
        return "amount must be a number"
    if amount <= 0:
        return "amount must be above 0"
    currency = body.get("currency")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        return "currency must be a three-letter code"
    return ""


def gateway_server(settings: Settings, ledger: Ledger | None = None) -> ThreadingHTTPServer:
    """An HTTP server charging on FLEET_PAYMENT_GATEWAY_URL's path (not started)."""
    url = urlsplit(settings.payment_gateway_url)
    if url.scheme != "http" or not url.hostname:
        raise DevPeerRefused(f"FLEET_PAYMENT_GATEWAY_URL={settings.payment_gateway_url}: the stand-in serves http only")
    path = url.path or "/"
    ledger = ledger or Ledger()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any], replayed: bool = False) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if replayed:
                self.send_header("Idempotent-Replayed", "true")
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:  # noqa: N802 - http.server hook
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.split("?")[0] != path:
                return self._send(404, {"error": f"POST {path} charges; nothing else here"})
            key = self.headers.get("Idempotency-Key", "")
            if not key:
                return self._send(400, {"error": "Idempotency-Key header required"})
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(400, {"error": "body must be JSON"})
            if not isinstance(body, dict):
                return self._send(400, {"error": "body must be a JSON object"})
            status, answer, replayed = ledger.charge(key, body)
            print(f"payment gateway: {key} -> {status}{' (replayed)' if replayed else ''}", flush=True)
            self._send(status, answer, replayed)

        def log_message(self, *args: Any) -> None:  # one line per charge is printed above
            pass

    return ThreadingHTTPServer((url.hostname, url.port or 80), Handler)


def serve_gateway(settings: Settings) -> None:
    """Charge on FLEET_PAYMENT_GATEWAY_URL until stopped."""
    refuse_in_production(settings, "the payment gateway stand-in")
    server = gateway_server(settings)
    print(f"payment gateway: charging on POST {settings.payment_gateway_url}", flush=True)
    server.serve_forever()
