"""The API's publisher: pooled connections in confirm mode, every step bounded in time.

Celery's own producer pool retries publishing and waits on the broker without
a deadline, so a stopped, blocked (memory/disk alarm) or hung RabbitMQ would
hold a request for as long as it lasts. Here each gunicorn worker keeps a small
pool of its own connections with socket read/write timeouts and a confirm
timeout, publishing goes through :mod:`fleet.publish` or ``apply_async`` with
our producer (so routing.py stays the only router), and whatever does not
end in RabbitMQ's ack within ``FLEET_PUBLISH_TIMEOUT`` raises
:class:`BrokerUnavailable`, which the API answers with 503 + ``Retry-After``.

A connection that failed or timed out is dropped without the AMQP close
handshake (a blocked broker would never answer it), so a late confirm can never
be mistaken for the next message's. A pooled connection that the broker closed
while it sat idle (restart, idle kill) fails on first use; that publish is tried
once more on a fresh connection, so the API recovers by itself once the broker
is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import amqp
from celery import Celery
from kombu import Connection, Producer

from fleet.publish import PublishError
from queues import TASK_EXCHANGE, declare_topology

logger = logging.getLogger("fleet.api.publisher")
T = TypeVar("T")
#: Slowest acceptable single wait inside a publish when little budget is left.
MIN_STEP = 0.05


class BrokerUnavailable(Exception):
    """RabbitMQ is down, blocked by an alarm, refused the message or did not confirm in time."""


@dataclass
class _Pooled:
    connection: Connection
    producer: Producer
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    uses: int = 0


class ConfirmingPublisher:
    """A per-process pool of confirm-mode connections with a deadline on every publish.

    ``timeout`` bounds connecting, each socket read/write and the wait for the
    confirm; :meth:`run` never takes much longer than ``timeout`` in total.
    Thread-safe (gunicorn's gthread workers share it); fork-aware (a forked
    child never reuses its parent's sockets).
    """

    def __init__(
        self,
        app: Celery,
        timeout: float,
        max_idle: int = 16,
        idle_seconds: float = 60.0,
        queue_type: str = "classic",
        delivery_limit: int = 5,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        self._idle: list[_Pooled] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    # -- public ------------------------------------------------------------------

    def run(self, send: Callable[[Producer, float], T]) -> T:
        """Call ``send(producer, confirm_timeout)`` on a pooled confirm-mode producer.

        ``send`` publishes without retrying, waits at most ``confirm_timeout``
        seconds and returns once RabbitMQ acked. Any failure becomes
        :class:`BrokerUnavailable` within the deadline.
        """
        deadline = time.monotonic() + self.timeout
        last_error: BaseException | None = None
        for _attempt in range(2):
            remaining = deadline - time.monotonic()
            if remaining <= MIN_STEP:
                break
            try:
                pooled = self._acquire(remaining)
            except Exception as exc:  # noqa: BLE001 - any connect failure means "broker unavailable"
                raise BrokerUnavailable(f"cannot connect to the broker: {exc!r}") from exc
            reused = pooled.uses > 0
            try:
                result = send(pooled.producer, max(deadline - time.monotonic(), MIN_STEP))
            except Exception as exc:  # noqa: BLE001 - nack, timeout, lost connection, channel error
                self._discard(pooled)
                last_error = exc
                if reused and _is_connection_error(exc):
                    # The other idle connections date from the same broker run: drop them all,
                    # so the retry connects afresh instead of meeting another dead one.
                    logger.info("pooled broker connection was gone (%r); retrying on a fresh one", exc)
                    self.close()
                    continue
                break
            self._release(pooled)
            return result
        raise BrokerUnavailable(f"the broker did not confirm the publish: {last_error!r}") from last_error

    def ping(self) -> None:
        """Prove the broker answers a round trip now (readiness); raise BrokerUnavailable if not."""

        def check(producer: Producer, timeout: float) -> None:
            producer.channel.exchange_declare(TASK_EXCHANGE.name, TASK_EXCHANGE.type, passive=True)

        self.run(check)

    def fresh_connection(self) -> Connection:
        """A new bounded, connected connection for one-off broker work (remote control); caller closes it.

        Celery's own pooled connections negotiate heartbeats nothing services in the API, so
        the broker drops them when idle; these have none and are used once.
        """
        return self._connect(self.timeout, declare=False)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pooled in idle:
            _drop(pooled.connection)

    # -- pool --------------------------------------------------------------------

    def _acquire(self, timeout: float) -> _Pooled:
        now = time.monotonic()
        stale: list[_Pooled] = []
        pooled = None
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                candidate = self._idle.pop()
                if now - candidate.last_used > self.idle_seconds:
                    stale.append(candidate)
                    continue
                pooled = candidate
                break
        for old in stale:
            _drop(old.connection)
        if pooled is None:
            connection = self._connect(timeout)
            pooled = _Pooled(connection, self._producer(connection))
        return pooled

    def _release(self, pooled: _Pooled) -> None:
        pooled.uses += 1
        pooled.last_used = time.monotonic()
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < self.max_idle:
                self._idle.append(pooled)
                return
        _drop(pooled.connection)

    def _discard(self, pooled: _Pooled) -> None:
        _drop(pooled.connection)

    def _connect(self, timeout: float, declare: bool = True) -> Connection:
        step = max(timeout, MIN_STEP)
        connection = self.app.connection_for_write(
            connect_timeout=step,
            # No heartbeats: nothing services an idle pooled connection between requests;
            # a dead one is detected on use and replaced (see run()).
            heartbeat=0,
            transport_options={"confirm_publish": True, "read_timeout": step, "write_timeout": step},
        )
        try:
            # One attempt: connect() would retry after kombu's 2 s interval, the caller retries instead.
            connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)
            if declare:
                declare_topology(connection, self.queue_type, self.delivery_limit)
        except BaseException:
            _drop(connection)
            raise
        return connection

    def _producer(self, connection: Connection) -> Producer:
        # confirm_publish makes py-amqp select confirm mode and wait for the ack on each publish.
        return Producer(connection.channel(), exchange=self.app.amqp.default_exchange, auto_declare=False)


def _is_connection_error(exc: BaseException | None) -> bool:
    if isinstance(exc, PublishError) and not exc.published:  # a batch that failed before its first message
        exc = exc.__cause__
    return isinstance(exc, amqp.Connection.connection_errors) and not isinstance(exc, TimeoutError)


def _drop(connection: Connection) -> None:
    """Close without the AMQP handshake: a blocked or dead broker would never answer it."""
    try:
        connection.collect()
    except Exception:  # noqa: BLE001 - already gone is fine
        pass


def send_kwargs(confirm_timeout: float) -> dict[str, Any]:
    """The publish options every API publish uses: our producer decides, no hidden retries."""
    return {"retry": False, "confirm_timeout": confirm_timeout}
