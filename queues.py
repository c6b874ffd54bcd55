"""fleet's RabbitMQ topology: exchanges, work queues, dead-letter queues.

Read it as a table. Every work queue is durable, bound to the ``fleet`` direct
exchange under its own name, and dead-letters what cannot be processed to
``<queue>.dlq`` through ``fleet.dlx``. Nothing else in fleet names a queue's
arguments, or the policy recommended for them on RabbitMQ before 3.12.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

from amqp.exceptions import AccessRefused, ChannelError, PreconditionFailed
from kombu import Connection, Exchange, Queue

logger = logging.getLogger("fleet.topology")

TASK_EXCHANGE = Exchange("fleet", type="direct", durable=True, delivery_mode="persistent")
DEAD_LETTER_EXCHANGE = Exchange("fleet.dlx", type="direct", durable=True, delivery_mode="persistent")
#: Far-future ETA tasks wait here instead of unacked in a worker (see fleet.worker.parking).
DELAY_EXCHANGE = Exchange("fleet.delay", type="headers", durable=True, delivery_mode="persistent")
DELAY_HEADER = "fleet-delay"
#: Delay queue TTLs in seconds, 4x apart: a message parks in the longest one not
#: longer than its remaining wait, and expires back into its work queue.
DELAY_SECONDS: tuple[int, ...] = (4, 16, 64, 256, 1024, 4096, 16384, 65536)

#: The highest message priority a queue takes (x-max-priority); the API refuses higher ones.
MAX_PRIORITY = 10
#: queue name -> x-max-priority (None: no priorities). Order is the display order.
WORK_QUEUES: dict[str, int | None] = {
    "high_priority": MAX_PRIORITY,
    "email": None,
    "reports": None,
    "default": None,
}
DEFAULT_QUEUE = "default"
QUEUE_TYPES = ("classic", "quorum")
#: Beat's leader lock: an exclusive queue lives exactly as long as the connection
#: that declared it, so it vanishes the moment the leading beat dies (fleet.beat).
BEAT_LEADER_QUEUE = "fleet.beat.leader"
#: Beat's shared "last sent" times, so a beat taking over never re-sends what the
#: previous leader sent (fleet.beat). One message: the latest state.
BEAT_STATE_QUEUE = "fleet.beat.state"


@dataclass(frozen=True)
class Policy:
    """A RabbitMQ policy: keys applied by the broker to every queue whose name matches."""

    name: str
    pattern: str
    definition: dict[str, object] = field(default_factory=dict)
    apply_to: str = "queues"

    def rabbitmqctl_args(self, vhost: str) -> list[str]:
        """``rabbitmqctl`` arguments that set this policy on ``vhost``."""
        definition = json.dumps(self.definition, separators=(",", ":"))
        return ["set_policy", "-p", vhost, "--apply-to", self.apply_to, self.name, self.pattern, definition]


def dlq_name(queue: str) -> str:
    """The dead-letter queue that collects what ``queue`` could not process."""
    return f"{queue}.dlq"


def _type_arguments(queue_type: str) -> dict[str, object]:
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"unknown queue type {queue_type!r}; expected one of {QUEUE_TYPES}")
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


def _dead_lettering(exchange: str, queue_type: str, routing_key: str | None = None) -> dict[str, object]:
    """Dead-letter to ``exchange``; on quorum queues, at least once.

    RabbitMQ dead-letters at most once by default: a message is removed from its
    queue whether or not the target queue got it, so a node lost at that moment
    loses it. Quorum queues (RabbitMQ >= 3.10) can keep the message until the
    target confirms it; that strategy requires ``x-overflow: reject-publish``.
    """
    arguments: dict[str, object] = {"x-dead-letter-exchange": exchange}
    if routing_key is not None:
        arguments["x-dead-letter-routing-key"] = routing_key
    if queue_type == "quorum":
        arguments |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return arguments


def work_queue(name: str, queue_type: str = "classic", delivery_limit: int = 5) -> Queue:
    """The durable work queue ``name`` with its dead-lettering and type arguments."""
    arguments: dict[str, object] = {
        **_dead_lettering(DEAD_LETTER_EXCHANGE.name, queue_type, dlq_name(name)),
        **_type_arguments(queue_type),
    }
    if queue_type == "quorum":
        # Quorum queues count redeliveries themselves and dead-letter past the limit.
        arguments["x-delivery-limit"] = delivery_limit
    max_priority = WORK_QUEUES[name]
    if max_priority and queue_type == "classic":  # quorum queues have no priorities
        arguments["x-max-priority"] = max_priority
    return Queue(
        name,
        TASK_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments=arguments,
    )


def dead_letter_queue(name: str, queue_type: str = "classic") -> Queue:
    """The durable queue holding ``name``'s dead letters for inspection and replay."""
    arguments = _type_arguments(queue_type)
    return Queue(
        dlq_name(name),
        DEAD_LETTER_EXCHANGE,
        routing_key=dlq_name(name),
        durable=True,
        queue_arguments=arguments,
    )


def delay_queue(seconds: int, queue_type: str = "classic") -> Queue:
    """Holds messages for ``seconds``, then dead-letters them back through ``fleet``
    under their own routing key, i.e. into the work queue they came from.

    Of the work queues' type: on a cluster a parked task must survive its node
    (quorum queues have per-queue message TTL since RabbitMQ 3.10).
    """
    return Queue(
        f"fleet.delay.{seconds}s",
        DELAY_EXCHANGE,
        durable=True,
        binding_arguments={"x-match": "all", DELAY_HEADER: seconds},
        queue_arguments={
            "x-message-ttl": seconds * 1000,
            **_dead_lettering(TASK_EXCHANGE.name, queue_type),
            **_type_arguments(queue_type),
        },
    )


def work_queues(queue_type: str = "classic", delivery_limit: int = 5) -> tuple[Queue, ...]:
    return tuple(work_queue(name, queue_type, delivery_limit) for name in WORK_QUEUES)


def dead_letter_queues(queue_type: str = "classic") -> tuple[Queue, ...]:
    return tuple(dead_letter_queue(name, queue_type) for name in WORK_QUEUES)


def beat_leader_queue() -> Queue:
    """The beat leader's lock: exclusive (one owner, gone with its connection), never durable."""
    return Queue(BEAT_LEADER_QUEUE, exclusive=True, auto_delete=True, durable=False)


def beat_state_queue(queue_type: str = "classic") -> Queue:
    """The last-sent times of the periodic tasks: only the newest message is kept."""
    return Queue(
        BEAT_STATE_QUEUE,
        durable=True,
        queue_arguments={"x-max-length": 1, "x-overflow": "drop-head", **_type_arguments(queue_type)},
    )


def topology(queue_type: str = "classic", delivery_limit: int = 5) -> tuple[Queue, ...]:
    """Every queue a worker declares: work queues, dead-letter queues, delay queues."""
    return (
        *work_queues(queue_type, delivery_limit),
        *dead_letter_queues(queue_type),
        *(delay_queue(seconds, queue_type) for seconds in DELAY_SECONDS),
    )


def backlog_policy() -> Policy:
    """Lazy mode for every queue fleet fills: work, dead-letter and delay queues.

    Before 3.12, RabbitMQ keeps a classic queue's backlog in the memory of the
    queue's process, which then pauses under load, and publisher confirms (so the
    API's 202s) wait with it (docs/PERFORMANCE.md, "The backlog in the queue's
    memory"). Lazy mode keeps the backlog on disk,
    which 3.12 and later always do (they ignore the key; quorum queues too). A
    policy, not a queue argument: it reaches queues that already exist, where a
    changed argument would make RabbitMQ refuse every later declare.
    """
    names = "|".join(re.escape(queue.name) for queue in topology())
    return Policy("fleet-backlog", f"^({names})$", {"queue-mode": "lazy"})


def declare_topology(connection: Connection, queue_type: str = "classic", delivery_limit: int = 5) -> list[str]:
    """Declare every exchange and queue. Idempotent: safe at every start and reconnect.

    A queue that already exists with other arguments makes RabbitMQ answer
    PRECONDITION_FAILED; that is deliberate (raised), a silent mismatch would be
    worse. A queue RabbitMQ cannot reach right now (on a cluster: a classic
    queue whose home node is down answers NOT_FOUND) is logged and skipped, so a
    reconnect to a surviving node never stops the caller; its name is returned.
    Declares on a channel of its own: a channel error closes the channel, and
    the connection's default channel is the one consumers use.
    """
    skipped: list[str] = []
    channel = connection.channel()
    try:
        for queue in topology(queue_type, delivery_limit):
            try:
                queue.bind(channel).declare()
            except (PreconditionFailed, AccessRefused):
                raise
            except ChannelError as exc:
                logger.warning("cannot declare queue %s now, skipping it: %r", queue.name, exc)
                skipped.append(queue.name)
                channel = connection.channel()  # the broker closed the failed one
    finally:
        channel.close()
    return skipped
