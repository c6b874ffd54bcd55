"""fleet's RabbitMQ topology: exchanges, work queues, dead-letter queues.

Read it as a table. Every work queue is durable, bound to the ``fleet`` direct
exchange under its own name, and dead-letters what cannot be processed to
``<queue>.dlq`` through ``fleet.dlx``. Nothing else in fleet names a queue's
arguments.
"""

from __future__ import annotations

from kombu import Connection, Exchange, Queue

TASK_EXCHANGE = Exchange("fleet", type="direct", durable=True, delivery_mode="persistent")
DEAD_LETTER_EXCHANGE = Exchange("fleet.dlx", type="direct", durable=True, delivery_mode="persistent")
#: Far-future ETA tasks wait here instead of unacked in a worker (see fleet.parking).
DELAY_EXCHANGE = Exchange("fleet.delay", type="headers", durable=True, delivery_mode="persistent")
DELAY_HEADER = "fleet-delay"
#: Delay queue TTLs in seconds, 4x apart: a message parks in the longest one not
#: longer than its remaining wait, and expires back into its work queue.
DELAY_SECONDS: tuple[int, ...] = (4, 16, 64, 256, 1024, 4096, 16384, 65536)

#: queue name -> x-max-priority (None: no priorities). Order is the display order.
WORK_QUEUES: dict[str, int | None] = {
    "high_priority": 10,
    "email": None,
    "reports": None,
    "default": None,
}
DEFAULT_QUEUE = "default"
QUEUE_TYPES = ("classic", "quorum")


def dlq_name(queue: str) -> str:
    """The dead-letter queue that collects what ``queue`` could not process."""
    return f"{queue}.dlq"


def _type_arguments(queue_type: str, delivery_limit: int) -> dict[str, object]:
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"unknown queue type {queue_type!r}; expected one of {QUEUE_TYPES}")
    if queue_type == "quorum":
        # Quorum queues count redeliveries themselves and dead-letter past the limit.
        return {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit}
    return {}


def work_queue(name: str, queue_type: str = "classic", delivery_limit: int = 5) -> Queue:
    """The durable work queue ``name`` with its dead-lettering and type arguments."""
    arguments: dict[str, object] = {
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
        "x-dead-letter-routing-key": dlq_name(name),
        **_type_arguments(queue_type, delivery_limit),
    }
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
    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    return Queue(
        dlq_name(name),
        DEAD_LETTER_EXCHANGE,
        routing_key=dlq_name(name),
        durable=True,
        queue_arguments=arguments,
    )


def delay_queue(seconds: int) -> Queue:
    """Holds messages for ``seconds``, then dead-letters them back through ``fleet``
    under their own routing key, i.e. into the work queue they came from."""
    return Queue(
        f"fleet.delay.{seconds}s",
        DELAY_EXCHANGE,
        durable=True,
        binding_arguments={"x-match": "all", DELAY_HEADER: seconds},
        queue_arguments={"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": TASK_EXCHANGE.name},
    )


def work_queues(queue_type: str = "classic", delivery_limit: int = 5) -> tuple[Queue, ...]:
    return tuple(work_queue(name, queue_type, delivery_limit) for name in WORK_QUEUES)


def dead_letter_queues(queue_type: str = "classic") -> tuple[Queue, ...]:
    return tuple(dead_letter_queue(name, queue_type) for name in WORK_QUEUES)


def declare_topology(connection: Connection, queue_type: str = "classic", delivery_limit: int = 5) -> None:
    """Declare every exchange and queue. Idempotent: safe at every start.

    A queue that already exists with other arguments makes RabbitMQ answer
    PRECONDITION_FAILED; that is deliberate, a silent mismatch would be worse.
    """
    channel = connection.default_channel
    delay_queues = tuple(delay_queue(seconds) for seconds in DELAY_SECONDS)
    for queue in (*work_queues(queue_type, delivery_limit), *dead_letter_queues(queue_type), *delay_queues):
        queue.bind(channel).declare()
