"""Real network peers on loopback for the tasks to talk to: SMTP and HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from fleet.testing.ports import free_port


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class SMTPPeer:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it receives."""

    def __init__(self) -> None:
        self.inbox = _Inbox()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=free_port())

    def start(self) -> SMTPPeer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self.controller.port

    def messages_to(self, address: str) -> list[Message]:
        with self.inbox.lock:
            return [m for m in self.inbox.messages if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 30) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages_to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{address}: {len(self.messages_to(address))} of {count} messages within {timeout}s")


@dataclass
class Hit:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _Script:
    statuses: list[int]
    body: Any = field(default_factory=dict)


class HTTPPeer:
    """A threaded HTTP server on 127.0.0.1 answering each path from a script.

    ``script(path, [500, 500, 200])`` answers the first two requests with 500 and
    every later one with 200. Every request is recorded with its arrival time.
    """

    def __init__(self) -> None:
        self.scripts: dict[str, _Script] = {}
        self.hits: dict[str, list[Hit]] = defaultdict(list)
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with peer.lock:
                    hits = peer.hits[path]
                    hits.append(Hit(time.monotonic(), self.command, path, dict(self.headers), _json(raw)))
                    script = peer.scripts.get(path, _Script([404]))
                    status = script.statuses[min(len(hits), len(script.statuses)) - 1]
                payload = json.dumps(script.body if status < 400 else {"error": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> HTTPPeer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path: str, statuses: list[int], body: Any = None) -> str:
        """Program ``path``; returns its URL."""
        with self.lock:
            self.scripts[path] = _Script(statuses, body if body is not None else {"ok": True})
            self.hits.pop(path, None)
        return self.url(path)

    def hits_for(self, path: str) -> list[Hit]:
        with self.lock:
            return list(self.hits[path])


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")
