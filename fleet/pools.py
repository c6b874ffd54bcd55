"""How each queue is consumed: one pool spec per queue.

``fleet worker <pool>``, the supervisor config and the Kubernetes manifests all
derive from :data:`POOLS`. Each spec carries a one-line rationale so the next
engineer knows why a number is what it is before changing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal

from queues import WORK_QUEUES

#: prefork: a main process hands tasks to forked children through pipes (crash isolation, a hard
#: limit kills only the child); threads: one process consuming for itself, tasks in threads, limits
#: and recycling by fleet.worker.limits (no hand-off: faster for short tasks, docs/PERFORMANCE.md)
PoolKind = Literal["prefork", "threads"]
#: Ack after the task ran, so a lost worker's task is redelivered: the fleet's default, which a
#: pool spec overrides (a pool whose tasks must never run twice would set acks_late=False).
ACKS_LATE = True


#: the highest niceness Linux has (the lowest scheduling weight)
MAX_NICE = 19
#: the bulk pools' niceness: weight 110 against a nice-0 process's 1024, so a latency pool that wakes
#: up gets a core at once; when it is idle the bulk pools still have all the CPU. Under the 3 x 10k
#: flood on 2 cores (shared, load 4-13) it took high_priority's p99 from 125-270 ms to 11-46 ms in five
#: of six interleaved pairs (118 ms against 152 in the sixth); nice 19 measured level with 10
#: (docs/PERFORMANCE.md), and 10 leaves the bulk pools more weight against RabbitMQ and the API.
BULK_NICE = 10


class PoolError(ValueError):
    """A pool name or a pool override is invalid."""


@dataclass(frozen=True)
class PoolSpec:
    #: the pool's name, and the queue it consumes unless ``queues`` says otherwise
    name: str
    pool: PoolKind
    concurrency: int
    prefetch_multiplier: int
    #: recycle a child after this many tasks (prefork only; None: never)
    max_tasks_per_child: int | None
    #: recycle a child (prefork) or the whole process (threads, fleet.worker.limits) once its
    #: resident memory passes this many KiB
    max_memory_per_child_kb: int | None
    soft_time_limit: int
    time_limit: int
    #: seconds a stopping worker (TERM: rollout, scale-in) lets running tasks finish; then
    #: it cancels the rest, which go back to their queue (late acks), and exits
    soft_shutdown_timeout: int
    replicas: int
    #: memory one worker process may use; Kubernetes limits are concurrency x this
    memory_mb: int
    cpu: float
    #: Kubernetes (KEDA) scales the pool's Deployment between these by queue depth
    min_replicas: int
    max_replicas: int
    #: p95 seconds a task may wait on the pool's queues before it starts (the alert rules' SLO)
    queue_wait_slo_s: int
    rationale: str
    #: long tasks: KEDA gives a pod back at most every few minutes (fleet.deploy.values.Autoscaling)
    slow_scale_down: bool = False
    acks_late: bool = ACKS_LATE
    #: the queues.py queues it consumes; () means the one named like the pool
    queues: tuple[str, ...] = ()
    #: scheduling niceness (0..19) ``fleet worker`` gives itself at start, inherited by its children and
    #: threads: bulk pools run above 0 so that on a shared host the latency pools win a core the moment
    #: they have work (fleet.worker.niceness; docs/PERFORMANCE.md). Raising it needs no privilege.
    nice: int = 0

    def __post_init__(self) -> None:
        if not self.queues:
            object.__setattr__(self, "queues", (self.name,))

    def check(self, consumer_timeout: float) -> None:
        """Refuse specs that would lose or duplicate work at run time."""
        if self.soft_time_limit >= self.time_limit:
            raise PoolError(f"pool {self.name}: soft_time_limit must be below time_limit")
        if self.time_limit >= consumer_timeout:
            raise PoolError(
                f"pool {self.name}: hard time limit {self.time_limit}s is not below RabbitMQ's "
                f"consumer_timeout ({consumer_timeout:g}s, FLEET_BROKER_CONSUMER_TIMEOUT): the broker "
                "would close the channel under a running task and redeliver it. Lower the limit "
                "or raise consumer_timeout on the broker and in FLEET_BROKER_CONSUMER_TIMEOUT."
            )
        if not 0 < self.soft_shutdown_timeout < self.time_limit:
            raise PoolError(
                f"pool {self.name}: soft_shutdown_timeout must be above 0 and below time_limit, or a stop "
                "would wait as long as the hard time limit anyway"
            )
        if not 0 <= self.nice <= MAX_NICE:
            raise PoolError(
                f"pool {self.name}: nice must be 0..{MAX_NICE} (below 0 would need root; 0 is the latency pools')"
            )
        if self.pool == "threads" and self.max_tasks_per_child:
            raise PoolError(
                f"pool {self.name}: recycling by task count needs the prefork pool (threads recycle the "
                "process by memory, max_memory_per_child_kb)"
            )
        unknown = set(self.queues) - set(WORK_QUEUES)
        if unknown:
            raise PoolError(f"pool {self.name}: unknown queues {sorted(unknown)}")


POOLS: dict[str, PoolSpec] = {
    spec.name: spec
    for spec in (
        PoolSpec(  # never scales to zero: latency
            name="high_priority",
            pool="prefork",
            concurrency=2,
            prefetch_multiplier=1,
            max_tasks_per_child=1000,
            max_memory_per_child_kb=256_000,
            soft_time_limit=25,
            time_limit=30,
            soft_shutdown_timeout=10,
            replicas=2,
            memory_mb=256,
            cpu=0.5,
            min_replicas=2,
            max_replicas=10,
            queue_wait_slo_s=1,
            rationale=(
                "latency first: prefetch 1 so nothing waits behind a buffered message and priorities hold; "
                "nice 0 against the bulk pools' 10, so its task gets a core the moment it arrives"
            ),
        ),
        PoolSpec(
            name="email",
            pool="threads",
            concurrency=16,
            prefetch_multiplier=4,
            max_tasks_per_child=None,
            max_memory_per_child_kb=None,
            soft_time_limit=50,
            time_limit=60,
            soft_shutdown_timeout=15,
            replicas=1,
            memory_mb=32,
            cpu=0.5,
            min_replicas=1,
            max_replicas=6,
            queue_wait_slo_s=30,
            nice=BULK_NICE,
            rationale=(
                "I/O-bound on SMTP round trips: cheap threads overlap the waits; time limits by fleet.worker.limits, "
                "and every SMTP step is bounded by FLEET_SMTP_TIMEOUT too"
            ),
        ),
        PoolSpec(
            name="reports",
            pool="prefork",
            concurrency=1,
            prefetch_multiplier=1,
            max_tasks_per_child=20,
            max_memory_per_child_kb=512_000,
            soft_time_limit=540,
            time_limit=600,
            soft_shutdown_timeout=30,
            replicas=1,
            memory_mb=768,
            cpu=1.0,
            min_replicas=0,
            max_replicas=3,
            queue_wait_slo_s=120,
            nice=BULK_NICE,
            slow_scale_down=True,
            rationale="memory-heavy and long: one at a time, no prefetch hoarding, child recycled past 512 MB",
        ),
        PoolSpec(
            name="default",
            pool="threads",
            concurrency=4,
            prefetch_multiplier=4,
            max_tasks_per_child=None,
            max_memory_per_child_kb=256_000,
            soft_time_limit=110,
            time_limit=120,
            soft_shutdown_timeout=10,
            replicas=2,
            memory_mb=96,
            cpu=1.0,
            min_replicas=2,
            max_replicas=8,
            queue_wait_slo_s=30,
            nice=BULK_NICE,
            rationale=(
                "short tasks, throughput first: 2 processes x 4 threads, each consuming for itself (Dramatiq's "
                "shape), ran 1.6x (quiet host) to 2.9x (loaded) prefork x 2 in bench.tune, no pipe hand-off; "
                "8 threads or 3 processes bought nothing on 2 cores; fleet.worker.limits keeps soft/hard time "
                "limits and memory recycling, a process that dies under a task has it retried against "
                "max_retries (fleet.worker.dedup). A task that can crash the interpreter or must be killed "
                "inside a C call belongs on a prefork pool "
                "(docs/PERFORMANCE.md)"
            ),
        ),
    )
}


def get_pool(name: str) -> PoolSpec:
    try:
        return POOLS[name]
    except KeyError:
        raise PoolError(f"unknown pool {name!r}; fleet's pools are {', '.join(POOLS)}") from None


_OVERRIDABLE = {
    f.name: f.type
    for f in fields(PoolSpec)
    if f.name
    in {
        "concurrency",
        "prefetch_multiplier",
        "max_tasks_per_child",
        "max_memory_per_child_kb",
        "soft_time_limit",
        "time_limit",
        "soft_shutdown_timeout",
        "replicas",
        "pool",
        "nice",
    }
}


#: overridable fields where 0 does not mean "off"
_ABOVE_ZERO = {"concurrency", "prefetch_multiplier", "time_limit", "soft_shutdown_timeout"}
#: overridable fields where 0 is a value like any other
_ZERO_IS_A_VALUE = {"nice"}


def env_overrides(spec: PoolSpec, pool_env: Mapping[str, str]) -> dict[str, str]:
    """The overrides for ``spec`` among ``FLEET_POOL_<POOL>_<FIELD>`` variables."""
    prefix = f"{spec.name.upper()}_"
    return {key.removeprefix(prefix).lower(): value for key, value in pool_env.items() if key.startswith(prefix)}


def with_overrides(spec: PoolSpec, overrides: Mapping[str, str | int | None]) -> PoolSpec:
    """``spec`` with fields replaced from CLI flags or ``FLEET_POOL_<NAME>_<FIELD>``.

    Values arrive as strings from the environment; they are checked here so a
    typo fails at start with the field's name.
    """
    changes: dict[str, object] = {}
    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in _OVERRIDABLE:
            raise PoolError(f"pool {spec.name}: {key!r} cannot be overridden; choose from {sorted(_OVERRIDABLE)}")
        if key == "pool":
            if raw not in ("prefork", "threads"):
                raise PoolError(f"pool {spec.name}: pool kind must be prefork or threads, not {raw!r}")
            changes[key] = raw
            continue
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise PoolError(f"pool {spec.name}: {key} must be a whole number, not {raw!r}") from None
        if value < 0 or (value == 0 and key in _ABOVE_ZERO):
            raise PoolError(f"pool {spec.name}: {key} must be above 0, not {value}")
        changes[key] = value if key in _ZERO_IS_A_VALUE else value or None
    return replace(spec, **changes)


def metrics_port(base: int, pool: str, index: int | None = None) -> int:
    """The metrics port of worker ``index`` of ``pool`` on a shared host.

    Pools take consecutive blocks from ``base`` (FLEET_METRICS_PORT, 9808), one
    port per replica in :data:`POOLS` order, so every worker process of a
    supervisor-run fleet has its own port; Kubernetes pods use the same numbering.
    """
    offset = 0
    for name, spec in POOLS.items():
        if name == pool:
            if index is not None and not 0 <= index < spec.replicas:
                raise PoolError(f"pool {pool}: index {index} outside 0..{spec.replicas - 1}")
            return base + offset + (index or 0)
        offset += spec.replicas
    raise PoolError(f"unknown pool {pool!r}")


def beat_metrics_port(base: int, index: int = 0) -> int:
    """The metrics port of beat ``index`` on a shared host: the first ports after every worker's."""
    return base + sum(spec.replicas for spec in POOLS.values()) + index
