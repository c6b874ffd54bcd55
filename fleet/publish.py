"""fleet's one publisher: pooled confirm-mode connections, one deadline, one retry rule, failover.

Everything fleet publishes goes through :class:`Publisher`: the API (single
tasks, batches, canvases), :func:`publish_many` (fan-outs, beat's digest), DLQ
replay and parking. Celery's own producer pool retries and waits on the broker
without a deadline, so a stopped, blocked (memory/disk alarm) or frozen
RabbitMQ would hold a caller for as long as it lasts. Here:

- **One deadline.** Connecting (every node of the list included), each socket
  read/write and the wait for RabbitMQ's confirms all fit in ``timeout``
  (``FLEET_PUBLISH_TIMEOUT`` by default) in total.
- **One retry rule.** A pooled connection the broker closed while it sat idle
  (restart, node loss) fails on first use; that publish is tried once more, on
  a fresh connection, with the *same* messages (same task ids). Nothing else is
  retried: the caller decides, knowing the outcome.
- **An honest outcome.** :class:`PublishError` says whether anything was
  written to the broker (``unknown``): if a message was written and not
  confirmed, RabbitMQ may still queue it, so the only safe retry republishes
  the same task id (the worker runs an id at most once, :mod:`fleet.worker.dedup`).
- **Failover.** ``CELERY_BROKER_URL`` may list alternates (``amqp://a//;amqp://b//``).
  Nodes are tried in order, each attempt bounded by its share of what is left
  of the deadline, starting from the node that answered last, so a dead node
  costs its connect timeout once, not on every publish.

A connection that failed or timed out is dropped without the AMQP close
handshake (a blocked broker would never answer it), so a late confirm can
never be mistaken for the next message's. Messages are batched with pipelined
confirms (:func:`publish_confirmed`): written first, many per socket write
(:mod:`fleet.amqp_frames`), acks collected after.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import amqp
from celery import Celery, signals
from kombu import Connection, Producer
from kombu.common import maybe_declare

from fleet.amqp_frames import CHUNK, ready_to_publish, write_publishes
from fleet.messages import Call, TaskMessage, TaskMessages
from fleet.transport import broker_urls, normalize_broker_url
from queues import TASK_EXCHANGE, declare_topology

if TYPE_CHECKING:
    from fleet.confirm_streams import ConfirmStreams

__all__ = [
    "BrokerUnavailable",
    "Call",
    "Confirms",
    "PublishError",
    "Publisher",
    "TaskMessage",
    "TaskMessages",
    "publish_confirmed",
    "publish_many",
    "publisher_for",
]

logger = logging.getLogger("fleet.publish")
T = TypeVar("T")
#: Slowest acceptable single wait inside a publish when little budget is left.
MIN_STEP = 0.05
#: The deadline of a publish from an app that has no fleet settings.
DEFAULT_TIMEOUT = 10.0


class PublishError(Exception):
    """RabbitMQ did not confirm every message (nack, return, timeout or lost connection).

    ``published`` messages were written to the broker. ``unknown`` is True when
    some of them may have been queued anyway (written, then no answer, or a
    partial batch): a caller that retries must republish the same task ids.
    False means nothing was accepted.
    """

    def __init__(self, message: str, published: int = 0, unknown: bool | None = None) -> None:
        super().__init__(message)
        self.published = published
        self.unknown = bool(published) if unknown is None else unknown


class BrokerUnavailable(PublishError):
    """The publisher gave up within its deadline: broker down, blocked, refusing or silent."""


# -- messages on the wire -------------------------------------------------------


def publish_confirmed(connection: Connection, messages: Sequence[TaskMessage], timeout: float) -> None:
    """Publish ``messages`` on a fresh confirm-mode channel of ``connection``; return once all are acked.

    Each target queue is declared once per connection (kombu remembers), so a
    publisher never sends into a vhost where its queue does not exist yet, and
    messages are mandatory: one the broker could not route to any queue, which
    RabbitMQ would otherwise ack and drop, fails the publish instead. Raises
    :class:`PublishError` if any message is nacked or returned, the confirms do
    not arrive within ``timeout`` seconds, or the connection fails.
    """
    confirms = Confirms()
    try:
        channel = connection.channel()
        for queue in {id(item.queue): item.queue for item in messages if item.queue is not None}.values():
            maybe_declare(queue, channel)
        channel.confirm_select()
        channel.events["basic_ack"].add(confirms.on_ack)
        channel.events["basic_nack"].add(confirms.on_nack)
        channel.events["basic_return"].add(confirms.on_return)
        # Written a chunk per socket write, acks collected after (a connection made with confirm_publish
        # would have basic_publish wait for each message's ack instead).
        for start in range(0, len(messages), CHUNK):
            chunk = messages[start : start + CHUNK]
            amqp_connection = ready_to_publish(channel)
            # Should the write fail, all of the chunk but its last message may have reached RabbitMQ.
            confirms.published += len(chunk) - 1
            write_publishes(amqp_connection, channel.channel_id, chunk)
            confirms.published += 1
            for item in chunk:
                announce_published(item)
        _await_confirms(connection, confirms, timeout)
    except (OSError, *connection.connection_errors, *connection.channel_errors) as exc:
        # No polite channel close here: a blocked broker would not answer it within the deadline,
        # and the caller drops the whole connection.
        raise PublishError(
            f"publishing failed after {confirms.published} of {len(messages)} messages: {exc!r}", confirms.published
        ) from exc
    _close_quietly(channel)


def announce_published(item: TaskMessage) -> None:
    if item.announce and signals.after_task_publish.receivers:
        signals.after_task_publish.send(
            sender=item.name,
            body=item.body,
            headers=item.message.application_headers,
            exchange=item.exchange,
            routing_key=item.routing_key,
        )


class Confirms:
    """Tracks RabbitMQ's acks for delivery tags 1..n of one confirm-mode channel (the bench's ceiling uses it too)."""

    def __init__(self) -> None:
        self.published = 0
        self.acked: set[int] = set()
        self.acked_below = 1  # every tag below this is acked
        self.nacked = 0
        self.returned: list[str] = []

    def on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.acked_below = max(self.acked_below, tag + 1)
        else:
            self.acked.add(tag)
        while self.acked_below in self.acked:
            self.acked.discard(self.acked_below)
            self.acked_below += 1

    def on_nack(self, tag: int, multiple: bool) -> None:
        self.nacked += 1

    def on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self.returned.append(routing_key)

    @property
    def done(self) -> bool:
        return self.acked_below > self.published


def _await_confirms(connection: Connection, confirms: Confirms, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not confirms.done and not confirms.nacked:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PublishError(
                f"RabbitMQ confirmed {confirms.acked_below - 1} of {confirms.published} messages within {timeout:g}s",
                confirms.published,
            )
        try:
            connection.drain_events(timeout=remaining)
        except TimeoutError:
            continue
    # Refused or unroutable messages were not queued; any the broker acked were: then the outcome is partial.
    partial = confirms.acked_below > 1 or bool(confirms.acked)
    if confirms.returned:
        raise PublishError(
            f"RabbitMQ could route {len(confirms.returned)} of {confirms.published} messages to no queue "
            f"(routing keys {sorted(set(confirms.returned))}): is fleet's topology declared in this vhost?",
            confirms.published,
            unknown=partial and len(confirms.returned) < confirms.published,
        )
    if confirms.nacked:
        raise PublishError(
            f"RabbitMQ refused {confirms.nacked} of {confirms.published} messages (nack)",
            confirms.published,
            unknown=partial or confirms.nacked < confirms.published,
        )


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - the channel may already be gone with the connection
        pass


# -- the pool --------------------------------------------------------------------


@dataclass
class _Pooled:
    connection: Connection
    producer: Producer
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    uses: int = 0


class Publisher:
    """A per-process pool of confirm-mode connections with a deadline on every publish.

    ``timeout`` bounds connecting, each socket read/write and the wait for the
    confirms; :meth:`run` never takes much longer than ``timeout`` in total.
    Thread-safe (an API worker's threads or greenlets share it); fork-aware (a forked
    child never reuses its parent's sockets).
    """

    def __init__(
        self,
        app: Celery,
        timeout: float,
        urls: Sequence[str] | None = None,
        max_idle: int = 16,
        idle_seconds: float = 60.0,
        queue_type: str = "classic",
        delivery_limit: int = 5,
        streams: int = 2,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.urls = list(urls or broker_urls(normalize_broker_url(app.conf.broker_write_url or app.conf.broker_url)))
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        self._idle: list[_Pooled] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._preferred = 0  # the node that answered last
        self.streams = streams
        self._confirm_streams: ConfirmStreams | None = None

    # -- public ------------------------------------------------------------------

    def run(self, send: Callable[[Producer, float], T], timeout: float | None = None) -> T:
        """Call ``send(producer, remaining_seconds)`` on a pooled confirm-mode producer.

        ``send`` publishes without retrying, waits at most ``remaining_seconds``
        and returns once RabbitMQ acked. Any failure becomes
        :class:`BrokerUnavailable` within the deadline (``timeout``, else the
        publisher's), saying whether the outcome is unknown.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        last_error: BaseException | None = None
        unknown = False
        for _attempt in range(2):
            remaining = deadline - time.monotonic()
            if remaining <= MIN_STEP:
                break
            try:
                pooled = self._acquire(remaining)
            except Exception as exc:  # noqa: BLE001 - any connect failure means "broker unavailable"
                raise BrokerUnavailable(f"cannot connect to the broker: {exc!r}", unknown=unknown) from exc
            reused = pooled.uses > 0
            try:
                result = send(pooled.producer, max(deadline - time.monotonic(), MIN_STEP))
            except Exception as exc:  # noqa: BLE001 - nack, timeout, lost connection, channel error
                self._discard(pooled)
                last_error = exc
                unknown = unknown or (isinstance(exc, PublishError) and exc.unknown)
                if reused and is_connection_error(exc):
                    # The other idle connections date from the same broker run: drop them all,
                    # so the retry connects afresh instead of meeting another dead one.
                    logger.info("pooled broker connection was gone (%r); retrying on a fresh one", exc)
                    self.close()
                    continue
                break
            self._release(pooled)
            return result
        raise BrokerUnavailable(
            f"the broker did not confirm the publish: {last_error!r}", unknown=unknown
        ) from last_error

    def publish(self, messages: Sequence[TaskMessage], timeout: float | None = None) -> None:
        """Publish ``messages``; return once RabbitMQ acked every one (group commit with the other callers).

        The API's path: the requests in flight share a few pipelined confirm
        streams (:mod:`fleet.confirm_streams`). Raises :class:`BrokerUnavailable`
        within ``timeout`` (else the publisher's), saying whether the outcome is unknown.
        """
        if self._confirm_streams is None:
            from fleet.confirm_streams import ConfirmStreams  # it builds on this module

            with self._lock:
                if self._confirm_streams is None:
                    self._confirm_streams = ConfirmStreams(self, self.streams)
        self._confirm_streams.publish(messages, self.timeout if timeout is None else timeout)

    def ping(self) -> None:
        """Prove the broker answers a round trip now (readiness); raise BrokerUnavailable if not."""

        def check(producer: Producer, timeout: float) -> None:
            producer.channel.exchange_declare(TASK_EXCHANGE.name, TASK_EXCHANGE.type, passive=True)

        self.run(check)

    def connect(self, timeout: float | None = None) -> Connection:
        """A new connection to the first node that answers, topology declared, within ``timeout``; caller drops it.

        For a caller that holds its connection itself (fleet.confirm_streams' threads).
        """
        return self._connect(self.timeout if timeout is None else timeout)

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
            drop_connection(pooled.connection)

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
            drop_connection(old.connection)
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
        drop_connection(pooled.connection)

    def _discard(self, pooled: _Pooled) -> None:
        drop_connection(pooled.connection)

    def _connect(self, timeout: float, declare: bool = True) -> Connection:
        """Connect to the first node that answers, from the last one that did, within ``timeout``."""
        deadline = time.monotonic() + timeout
        start = self._preferred
        order = [(start + offset) % len(self.urls) for offset in range(len(self.urls))]
        errors = []
        for tried, index in enumerate(order):
            remaining = deadline - time.monotonic()
            if remaining <= MIN_STEP and errors:
                break
            # Each node gets an equal share of what is left, so a silent first node cannot eat the deadline.
            step = max(remaining / (len(order) - tried), MIN_STEP)
            try:
                connection = self._connect_to(self.urls[index], step, declare)
            except Exception as exc:  # noqa: BLE001 - try the next node
                errors.append(exc)
                logger.info("broker node %d of %d did not answer: %r", index + 1, len(self.urls), exc)
                continue
            self._preferred = index
            return connection
        raise errors[-1] if len(errors) == 1 else ConnectionError(f"no broker node answered: {errors!r}")

    def _connect_to(self, url: str, step: float, declare: bool) -> Connection:
        connection = self.app.connection_for_write(
            url,
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
            drop_connection(connection)
            raise
        return connection

    def _producer(self, connection: Connection) -> Producer:
        # confirm_publish makes py-amqp select confirm mode and wait for the ack on each publish.
        return Producer(connection.channel(), exchange=self.app.amqp.default_exchange, auto_declare=False)


def is_connection_error(exc: BaseException | None) -> bool:
    if isinstance(exc, PublishError):
        exc = exc.__cause__
    return isinstance(exc, amqp.Connection.connection_errors) and not isinstance(exc, TimeoutError)


def drop_connection(connection: Connection) -> None:
    """Close without the AMQP handshake: a blocked or dead broker would never answer it."""
    try:
        connection.collect()
    except Exception:  # noqa: BLE001 - already gone is fine
        pass


# -- one publisher per app and process ---------------------------------------------

_publishers: weakref.WeakKeyDictionary[Celery, Publisher] = weakref.WeakKeyDictionary()
_publishers_lock = threading.Lock()


def publisher_for(app: Celery) -> Publisher:
    """The process's publisher for ``app``: one pool shared by the API, fan-outs, replay and parking."""
    with _publishers_lock:
        publisher = _publishers.get(app)
        if publisher is None:
            settings = getattr(app, "fleet_settings", None)
            if settings is None:
                publisher = Publisher(app, DEFAULT_TIMEOUT)
            else:
                publisher = Publisher(
                    app,
                    settings.publish_timeout,
                    max_idle=max(settings.api_threads * 2, 4),
                    queue_type=settings.queue_type,
                    delivery_limit=settings.delivery_limit,
                    streams=settings.api_confirm_streams,
                )
            _publishers[app] = publisher
        return publisher


def publish_many(app: Celery, calls: Iterable[Call], timeout: float | None = None) -> list[str]:
    """Publish ``calls`` and return their task ids once RabbitMQ confirmed all of them.

    Every message is built before the first is sent, so a bad call (unknown
    task or queue, unsupported option) raises and publishes nothing. Bounded by
    ``timeout`` (default ``FLEET_PUBLISH_TIMEOUT``) in total; raises
    :class:`BrokerUnavailable` (a :class:`PublishError`) if RabbitMQ does not
    confirm them all, saying whether some may have been queued.
    """
    build = TaskMessages(app)
    messages = [build(*_with_options(call)) for call in calls]

    def send(producer: Producer, remaining: float) -> None:
        publish_confirmed(producer.connection, messages, remaining)

    publisher_for(app).run(send, timeout)
    return [item.task_id for item in messages]


def _with_options(call: Call) -> tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]]:
    name, args, kwargs, *options = call
    return name, args, kwargs, options[0] if options else {}
