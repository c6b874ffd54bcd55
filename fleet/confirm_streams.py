"""Group commit of publisher confirms: the requests in flight share pipelined confirm streams.

A confirmed publish on its own costs a round trip to RabbitMQ (and RabbitMQ's
write to disk) per message, on a channel each request thread holds while it
waits. Here a few *stream* threads per process (greenlets under the API's
gevent workers) own one confirm-mode connection each. A request hands its
message to the streams and waits; a free stream takes every message waiting at
that moment, writes them back to back (many per socket write,
:mod:`fleet.amqp_frames`), then collects RabbitMQ's acks (often one
``multiple`` ack for the lot) and answers each request when its own message is
acked. Requests that arrive meanwhile go out with the next stream, or the next
round: nothing waits for a timer.

What :class:`fleet.publish.Publisher` promises holds here too:

- **No 202 before RabbitMQ acked.** A request returns only once the ack for
  its own delivery tag arrived; a nack or a return (mandatory: no queue) fails
  that request alone, saying nothing was queued.
- **One deadline.** Each request waits at most its own ``timeout``; when it
  gives up, a message not yet written is withdrawn (outcome ``none``) and one
  already written is reported as ``unknown``. A stream never outlives the
  longest deadline of its round: then its connection is dropped unclosed, so a
  late ack cannot be taken for another message's.
- **One retry rule, failover.** Connections come from the publisher's
  :meth:`~fleet.publish.Publisher.connect` (the failover list, bounded); a
  connection the broker closed while it sat idle fails its round with a
  connection error, and that round is written once more on a fresh one, with
  the same messages (same task ids).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fleet.amqp_frames import CHUNK, publish_frames
from fleet.messages import TaskMessage
from fleet.publish import (
    MIN_STEP,
    BrokerUnavailable,
    Publisher,
    announce_published,
    drop_connection,
    is_connection_error,
)

if TYPE_CHECKING:
    from kombu import Connection

logger = logging.getLogger("fleet.publish")

#: a message's way: QUEUED -> WRITTEN -> ACKED; FAILED (written, no answer: RabbitMQ may hold it);
#: NOT_QUEUED (withdrawn before writing, nacked or returned: RabbitMQ does not hold it)
QUEUED, WRITTEN, ACKED, FAILED, NOT_QUEUED = range(5)


class Ticket:
    """What a request waits on: set once every one of its messages is answered."""

    __slots__ = ("done", "open")

    def __init__(self, count: int) -> None:
        self.open = count
        self.done = threading.Event()


class Pending:
    """One message of a request, from handing over to its ack (or failure)."""

    __slots__ = ("deadline", "error", "item", "state", "ticket")

    def __init__(self, item: TaskMessage, deadline: float, ticket: Ticket) -> None:
        self.item = item
        self.deadline = deadline
        self.ticket = ticket
        self.state = QUEUED
        self.error: str | None = None

    def answer(self, state: int, error: str | None = None) -> None:
        """Called holding the streams' lock."""
        self.state, self.error = state, error
        self.ticket.open -= 1
        if not self.ticket.open:
            self.ticket.done.set()


class ConfirmStreams:
    """``streams`` threads sharing one queue of messages, each with its own confirm-mode connection."""

    def __init__(self, publisher: Publisher, streams: int = 2) -> None:
        self.publisher = publisher
        self.streams = streams
        self._queue: list[Pending] = []
        self._cond = threading.Condition()
        self._pid = 0
        self._threads: list[threading.Thread] = []

    def publish(self, items: Sequence[TaskMessage], timeout: float) -> None:
        """Return once RabbitMQ acked every one of ``items``; raise PublishError saying what is known otherwise."""
        if not items:
            return
        deadline = time.monotonic() + timeout
        ticket = Ticket(len(items))
        pending = [Pending(item, deadline, ticket) for item in items]
        with self._cond:
            self._start()
            self._queue.extend(pending)
            self._cond.notify()
        ticket.done.wait(timeout)
        with self._cond:
            for entry in pending:
                if entry.state == QUEUED:
                    entry.state = NOT_QUEUED  # never written: the stream skips it
            states = [entry.state for entry in pending]
        if all(state == ACKED for state in states):
            for item in items:
                announce_published(item)
            return
        written = sum(state != NOT_QUEUED for state in states)
        # Partly acked, or written and never answered: RabbitMQ may hold some of them.
        unknown = any(state in (ACKED, WRITTEN, FAILED) for state in states)
        errors = sorted({entry.error for entry in pending if entry.error})
        reason = "; ".join(errors) or f"no confirm from RabbitMQ within {timeout:g}s"
        raise BrokerUnavailable(f"{reason} ({written} of {len(pending)} written)", written, unknown=unknown)

    # -- the stream threads ------------------------------------------------------------

    def _start(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's threads did not come along
            self._pid, self._queue, self._threads = os.getpid(), [], []
        if not self._threads:
            for number in range(self.streams):
                thread = threading.Thread(target=self._run, name=f"fleet-confirms-{number}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _run(self) -> None:
        stream = _Stream(self.publisher, self._cond)
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, self._queue = self._queue, []
            try:
                stream.send(batch)
            except Exception:  # noqa: BLE001 - a stream must never die; its requests answer by their deadlines
                logger.exception("confirm stream failed")
                stream.drop()
                _finish(self._cond, batch, "confirm stream failed")


def _finish(cond: threading.Condition, batch: Sequence[Pending], error: str) -> None:
    with cond:
        for entry in batch:
            if entry.state in (QUEUED, WRITTEN):
                entry.answer(FAILED if entry.state == WRITTEN else NOT_QUEUED, error)


class _Stream:
    """One connection and confirm-mode channel, used by one thread only."""

    def __init__(self, publisher: Publisher, cond: threading.Condition) -> None:
        self.publisher = publisher
        self.cond = cond
        self.connection: Connection | None = None
        self.channel: Any = None
        self.last_used = 0.0
        self.sent = 0  # delivery tags handed out on this channel
        self.lowest = 1  # every tag below this is answered
        self.waiting: dict[int, Pending] = {}
        self.returned: set[str] = set()
        self.nacked = False  # RabbitMQ refused a message on this channel

    def send(self, batch: list[Pending]) -> None:
        """Write ``batch`` and collect its acks; on a connection an idle spell killed, once more on a fresh one."""
        for attempt in range(2):
            reused = self.connection is not None
            try:
                self._round(batch)
                if self.nacked:
                    # A channel that published to a quorum queue whose leader died can keep refusing
                    # every message (its queue client waits for answers the dead leader never sends);
                    # a fresh channel publishes to the new leader.
                    logger.warning("RabbitMQ refused a message on a confirm stream; opening a fresh connection")
                    self.drop()
                return
            except Exception as exc:  # noqa: BLE001 - nack/timeouts are handled inside; this is the connection
                self.drop()
                if attempt == 0 and reused and is_connection_error(exc):
                    logger.info("confirm stream's broker connection was gone (%r); retrying on a fresh one", exc)
                    with self.cond:
                        for entry in batch:
                            if entry.state == WRITTEN:
                                entry.state = QUEUED  # the same message, same task id, once more
                    continue
                _finish(self.cond, batch, f"publishing failed: {exc!r}")
                return

    def _round(self, batch: list[Pending]) -> None:
        deadline = max(entry.deadline for entry in batch)
        now = time.monotonic()
        if self.connection is not None and now - self.last_used > self.publisher.idle_seconds:
            self.drop()  # the broker may well have closed it meanwhile
        if self.connection is None:
            self._open(deadline - now)
        with self.cond:  # claimed all at once: a request giving up from here on reports "unknown"
            claimed = [entry for entry in batch if entry.state == QUEUED]  # the others were withdrawn
            for entry in claimed:
                entry.state = WRITTEN
        for start in range(0, len(claimed), CHUNK):  # a chunk per socket write, acks collected below
            chunk = claimed[start : start + CHUNK]
            try:
                publish_frames(self.channel, [entry.item for entry in chunk])
            except BaseException:
                # The socket took an unknown part of this chunk: its messages stay WRITTEN ("unknown").
                with self.cond:  # from the next chunk on nothing reached the socket: "none", unless retried
                    for unsent in claimed[start + len(chunk) :]:
                        unsent.state = QUEUED
                raise
            # Registered before the next chunk's write, which may read (and answer) these tags' acks.
            for entry in chunk:
                self.sent += 1
                self.waiting[self.sent] = entry
        self.last_used = time.monotonic()
        while self.waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"RabbitMQ confirmed no more of {len(self.waiting)} messages in time")
            try:
                self.connection.drain_events(timeout=remaining)  # type: ignore[union-attr]
            except TimeoutError:
                continue

    def _open(self, timeout: float) -> None:
        self.connection = self.publisher.connect(max(timeout, MIN_STEP))
        self.channel = self.connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        self.sent, self.lowest, self.nacked = 0, 1, False
        self.waiting = {}
        self.returned = set()

    def drop(self) -> None:
        if self.connection is not None:
            drop_connection(self.connection)
        self.connection = self.channel = None
        self.waiting = {}

    # -- RabbitMQ's answers (called from drain_events, on this stream's thread) ------------

    def _answered(self, tag: int, multiple: bool) -> list[Pending]:
        """The messages an ack or nack answers: ``tag``, or every tag up to it (each tag looked at once)."""
        if not multiple:
            entry = self.waiting.pop(tag, None)
            return [] if entry is None else [entry]
        tags = range(self.lowest, tag + 1)
        self.lowest = max(self.lowest, tag + 1)
        return [entry for t in tags if (entry := self.waiting.pop(t, None)) is not None]

    def _on_ack(self, tag: int, multiple: bool) -> None:
        with self.cond:
            for entry in self._answered(tag, multiple):
                if entry.item.task_id in self.returned:  # acked after its basic.return: routed nowhere
                    self.returned.discard(entry.item.task_id)
                    entry.answer(NOT_QUEUED, "RabbitMQ could route the message to no queue")
                else:
                    entry.answer(ACKED)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self.nacked = True
        with self.cond:
            for entry in self._answered(tag, multiple):
                entry.answer(NOT_QUEUED, "RabbitMQ refused the message (nack)")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        task_id = message.properties.get("correlation_id") or (message.headers or {}).get("id")
        if task_id:
            self.returned.add(task_id)
