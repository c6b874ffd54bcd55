"""Several beats, one leader: a lock RabbitMQ holds, and "last sent" times all beats share.

**The lock.** Every beat keeps a broker connection and tries to declare the exclusive
queue ``fleet.beat.leader``. RabbitMQ lets exactly one connection own it and deletes it
the moment that connection closes, whether the beat stopped, crashed or lost its node,
so a standby's next attempt (every :data:`LOCK_INTERVAL` s) succeeds within about a
second. The leader proves it still owns the queue (a passive declare, one round trip)
before every pass over the schedule, and never sends without it.

**The shared state.** Celery's schedule file is per process: a standby taking over
would think every entry last ran when *it* started, and send at once whatever the
leader sent a moment ago. So the leader records each entry's new "last run at" in the
durable queue ``fleet.beat.state`` (newest message only, confirmed) *before* it sends
the task, and a beat that takes the lock first merges that state into its schedule
(the later time wins). Recording first means a leader killed between the two steps
skips that one run rather than letting its successor run it a second time.

On a cluster the lock queue lives on the node of the leader's connection: if that
node dies, so does the connection, and whichever beat reconnects first leads. The
state queue is a quorum queue in quorum mode, so it survives the node.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from amqp.exceptions import ResourceLocked
from celery.beat import PersistentScheduler, ScheduleEntry
from kombu import Connection, Producer

from fleet.metrics.beat import BeatMetrics
from fleet.pools import beat_metrics_port
from fleet.transport import broker_urls
from queues import BEAT_LEADER_QUEUE, BEAT_STATE_QUEUE, beat_leader_queue, beat_state_queue

logger = logging.getLogger("fleet.beat")

#: Seconds between a standby's attempts at the lock, and the longest a leader goes
#: without proving it still holds it.
LOCK_INTERVAL = 1.0
#: Socket timeouts of the lock connection: a leader cut off from the broker gives up
#: the lead within this, instead of hanging in a round trip.
LOCK_IO_TIMEOUT = 5
#: AMQP heartbeat of the lock connection: a leader that hangs (stops sending anything)
#: loses its connection, hence the lock, after about two of these.
LOCK_HEARTBEAT = 10


class StateNotRecorded(RuntimeError):
    """The shared state could not be written, so the due task was not sent."""


class BrokerLock:
    """Leadership as ownership of the exclusive queue ``fleet.beat.leader``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.connection: Connection | None = None
        self.channel: Any = None

    @property
    def held(self) -> bool:
        return self.channel is not None

    def acquire(self) -> bool:
        """Try once to take the lock (connecting through the failover list if needed)."""
        try:
            if self.connection is None:
                self.connection = self.app.connection_for_write(
                    heartbeat=LOCK_HEARTBEAT,
                    transport_options={"read_timeout": LOCK_IO_TIMEOUT, "write_timeout": LOCK_IO_TIMEOUT},
                )
                # One attempt per URL: a dead node is skipped, a standby never blocks its loop for long.
                self.connection.ensure_connection(max_retries=len(broker_urls(self.app.conf.broker_url)))
            channel = self.connection.channel()
            try:
                beat_leader_queue().bind(channel).declare()
            except ResourceLocked:
                return False  # another beat leads; the broker closed this channel
            self.channel = channel
            return True
        except Exception as exc:  # noqa: BLE001 - no broker, no lead; try again later
            logger.warning("beat: cannot reach the broker for the leader lock: %r", exc)
            self.release()
            return False

    def confirm(self) -> bool:
        """Whether this beat still holds the lock: the owner alone may passively declare it."""
        if self.channel is None:
            return False
        try:
            self.channel.queue_declare(BEAT_LEADER_QUEUE, passive=True)
            return True
        except Exception as exc:  # noqa: BLE001 - whatever broke, the lead is gone
            logger.warning("beat: lost the leader lock: %r", exc)
            self.release()
            return False

    def release(self) -> None:
        """Close the lock connection; RabbitMQ deletes the queue, so another beat can lead."""
        self.channel = None
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # noqa: BLE001 - it is already broken
                pass
            self.connection = None


class SharedLastRuns:
    """Each entry's "last run at", kept in ``fleet.beat.state`` for whichever beat leads next."""

    def __init__(self, queue_type: str) -> None:
        self.queue = beat_state_queue(queue_type)

    def take(self, channel: Any) -> dict[str, datetime]:
        """Read (and consume) what earlier leaders recorded; the later time per entry wins."""
        self.queue.bind(channel).declare()
        merged: dict[str, datetime] = {}
        while (message := channel.basic_get(BEAT_STATE_QUEUE, no_ack=False)) is not None:
            for name, iso in json.loads(message.body)["last_run_at"].items():
                at = datetime.fromisoformat(iso)
                merged[name] = max(at, merged.get(name, at))
            channel.basic_ack(message.delivery_tag)
        return merged

    def record(self, channel: Any, last_runs: dict[str, datetime], leader: str) -> None:
        """Publish the whole state (persistent, confirmed); only the newest message is kept."""
        body = json.dumps({"leader": leader, "last_run_at": {n: at.isoformat() for n, at in last_runs.items()}})
        Producer(channel).publish(
            body,
            routing_key=BEAT_STATE_QUEUE,
            exchange="",
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class LeaderScheduler(PersistentScheduler):
    """Celery's file-backed scheduler that only sends while it holds the broker's leader lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        app = kwargs["app"] if "app" in kwargs else args[0]
        settings = app.fleet_settings
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.lock = BrokerLock(app)
        self.shared = SharedLastRuns(settings.queue_type)
        self.metrics = BeatMetrics()
        self._last_attempt = 0.0
        #: entry -> when it last went out (this beat's sends, or the shared state at takeover)
        self._last_sent: dict[str, datetime] = {}
        self._settings = settings
        self._serving = not settings.metrics_enabled
        super().__init__(*args, **kwargs)

    # -- leadership ---------------------------------------------------------------------

    def _lead(self) -> bool:
        """Hold the lock (proven now), taking it over if it is free."""
        if self.lock.held:
            return self.lock.confirm()
        if time.monotonic() - self._last_attempt < LOCK_INTERVAL:
            return False
        self._last_attempt = time.monotonic()
        if not self.lock.acquire():
            return False
        try:
            self._take_over(self.shared.take(self.lock.channel))
        except Exception as exc:  # noqa: BLE001 - without the shared state, leading could send twice
            logger.warning("beat: cannot read the shared schedule state, giving the lead up: %r", exc)
            self.lock.release()
            return False
        logger.info("beat: %s leads (lock %s)", self.identity, BEAT_LEADER_QUEUE)
        return True

    def _take_over(self, recorded: dict[str, datetime]) -> None:
        """Adopt the previous leaders' "last run at" where it is later than this beat's own."""
        for name, at in recorded.items():
            entry = self.schedule.get(name)
            if entry is not None and at > _aware(entry.last_run_at):
                entry.last_run_at = at
        self._heap = None  # re-sorted from the merged times on this tick
        self._last_sent = {name: _aware(entry.last_run_at) for name, entry in self.schedule.items()}
        self.shared.record(self.lock.channel, self._last_runs(), self.identity)

    def _last_runs(self) -> dict[str, datetime]:
        return {name: _aware(entry.last_run_at) for name, entry in self.schedule.items()}

    # -- Celery's scheduler hooks -------------------------------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._serving:  # on the first tick: Celery also builds a scheduler only to print its banner
            self._serving = True
            self.metrics.serve(self._settings.metrics_addr, beat_metrics_port(self._settings.metrics_port))
        leading = self._lead()
        self.metrics.ticked(leading)
        if not leading:
            return LOCK_INTERVAL
        try:
            delay = super().tick(*args, **kwargs)
        except StateNotRecorded as exc:
            logger.warning("beat: %s; giving the lead up", exc)
            self._heap = None
            self.lock.release()
            return LOCK_INTERVAL
        self._export()
        return min(delay, LOCK_INTERVAL)

    def reserve(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Advance the entry's "last run at" and record it for every beat *before* it is sent."""
        new_entry = super().reserve(entry)
        try:
            self.shared.record(self.lock.channel, self._last_runs(), self.identity)
        except Exception as exc:  # noqa: BLE001 - not recorded, not sent
            self.schedule[entry.name] = entry
            raise StateNotRecorded(f"not sending {entry.name}: its run could not be recorded ({exc!r})") from exc
        return new_entry

    def apply_async(self, entry: ScheduleEntry, *args: Any, **kwargs: Any) -> Any:
        result = super().apply_async(entry, *args, **kwargs)
        self._last_sent[entry.name] = datetime.now(UTC)
        return result

    def _export(self) -> None:
        now = datetime.now(UTC)
        for name, entry in self.schedule.items():
            sent = self._last_sent.get(name)
            if sent is not None:
                due_in = entry.schedule.remaining_estimate(sent).total_seconds()
                self.metrics.entry(name, sent, now.timestamp() + due_in)

    def close(self) -> None:
        super().close()
        self.lock.release()
