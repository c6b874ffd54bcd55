"""fleet's deploy values: what the rendered files take besides the pool specs (Helm's ``values.yaml``).

Every number a deploy file carries is either a pool spec's (:data:`fleet.pools.POOLS`), a
setting's default (:mod:`fleet.settings`) or a field here, so a probe timing, a disruption
budget or an emptyDir size changes in one place. Frozen: the renderers read it, nothing writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from types import MappingProxyType

from fleet.settings import load_settings

#: The settings' defaults, so ports and the consumer timeout are stated once (fleet/settings.py).
_DEFAULTS = load_settings({})


@dataclass(frozen=True)
class Supervisor:
    startsecs: int = 5
    startretries: int = 5
    dev_stopwaitsecs: int = 5
    #: below supervisord's default 999: the dev stand-ins start before the workers and stop after them
    dev_priority: int = 100


@dataclass(frozen=True)
class Workload:
    """A program that is not a pool: the API or beat (replicas, memory and CPU are Kubernetes')."""

    #: supervisor's stopwaitsecs and Kubernetes' terminationGracePeriodSeconds
    stop_wait_s: int
    replicas: int
    memory_mb: int
    cpu: float


@dataclass(frozen=True)
class Probe:
    period_s: int
    failures: int


@dataclass(frozen=True)
class Probes:
    """startup, liveness, readiness; exec probes (workers) or HTTP probes (the API)."""

    timeout_s: int
    startup: Probe
    liveness: Probe
    readiness: Probe


@dataclass(frozen=True)
class Volume:
    """An emptyDir mounted at ``path``; the root filesystem is read-only."""

    path: str
    size: str
    memory: bool = False


@dataclass(frozen=True)
class ScaleDown:
    """How a pool with ``slow_scale_down`` (long tasks) gives pods back: one per period, after a wait."""

    stabilization_s: int
    period_s: int


@dataclass(frozen=True)
class Autoscaling:
    """KEDA: how often it reads queue depth, and how slow pools give pods back."""

    polling_interval_s: int = 15
    fallback_failure_threshold: int = 3
    #: cooldownPeriod = a pod's grace period + this: a pod scaled away finishes its warm shutdown first
    cooldown_margin_s: int = 60
    slow_scale_down: ScaleDown = ScaleDown(stabilization_s=1800, period_s=600)


@dataclass(frozen=True)
class Rollout:
    max_surge: int = 1
    max_unavailable: int = 0
    #: the PodDisruptionBudget of every Deployment
    pdb_max_unavailable: int = 1


def _frozen(**items: str) -> Mapping[str, str]:
    return MappingProxyType(items)


@dataclass(frozen=True)
class K8s:
    namespace: str = "fleet"
    image: str = field(default_factory=lambda: f"fleet:{version('fleet')}")
    #: the Dockerfile's user and group (a test checks the Dockerfile against it)
    uid: int = 10001
    #: the Celery main process (consumer, event loop) beside concurrency x memory_mb
    main_process_memory_mb: int = 128
    cpu_limit_factor: int = 2
    #: gunicorn per API pod (docs/PERFORMANCE.md, "The server"): one worker per core of the pod's CPU
    #: limit (0.5 requested x cpu_limit_factor = 1 core, plus one spare so a dead worker leaves one serving),
    #: gevent workers (8 threads each if switched to gthread), and 2 confirm streams per worker that its
    #: requests share
    api_gunicorn_workers: int = 2
    api_gunicorn_worker_class: str = _DEFAULTS.api_worker_class
    api_gunicorn_threads: int = _DEFAULTS.api_threads
    #: connections a worker serves at once: with the 1 MiB body limit, within the pod's memory
    api_gunicorn_connections: int = _DEFAULTS.api_connections
    api_confirm_streams: int = _DEFAULTS.api_confirm_streams
    #: files only (fleet.worker.health): a broker outage must not fail these and crash-loop the pods
    worker_probes: Probes = Probes(timeout_s=5, startup=Probe(5, 24), liveness=Probe(15, 3), readiness=Probe(10, 2))
    api_probes: Probes = Probes(timeout_s=3, startup=Probe(2, 30), liveness=Probe(10, 3), readiness=Probe(5, 2))
    autoscaling: Autoscaling = Autoscaling()
    rollout: Rollout = Rollout()
    #: name -> emptyDir; "var" is FLEET_VAR_DIR (the Dockerfile's too), "metrics" the workers' multiprocess files
    volumes: Mapping[str, Volume] = field(
        default_factory=lambda: MappingProxyType(
            {
                "tmp": Volume("/tmp", "256Mi"),
                "var": Volume("/var/lib/fleet", "1Gi"),
                "metrics": Volume("/var/lib/fleet/metrics", "64Mi", memory=True),
            }
        )
    )
    #: the fleet-config ConfigMap: FLEET_* settings; paths, ports and the consumer timeout are added
    #: from the values and the settings' defaults (fleet.deploy.k8s.config_data)
    config: Mapping[str, str] = field(
        default_factory=lambda: _frozen(
            FLEET_ENV="production",
            FLEET_LOG_LEVEL="info",
            FLEET_BROKER_CONSUMER_TIMEOUT=f"{_DEFAULTS.broker_consumer_timeout:g}",
            FLEET_SMTP_HOST="smtp.example.internal",
            FLEET_SMTP_PORT="587",
            FLEET_SMTP_STARTTLS="1",
            FLEET_MAIL_FROM="fleet@example.internal",
        )
    )
    #: the Secret template: placeholders only, never a real secret in the repository
    secret: Mapping[str, str] = field(
        default_factory=lambda: _frozen(
            CELERY_BROKER_URL="amqp://fleet:REPLACE-ME@rabbitmq.fleet.svc:5672/fleet",
            CELERY_RESULT_BACKEND="redis://:REPLACE-ME@redis.fleet.svc:6379/0",
            # one token per client, each with its scope (fleet.api.auth): operators, dashboards, enqueuing services
            FLEET_API_TOKENS="ops:operate:REPLACE-ME,viewer:read:REPLACE-ME,services:enqueue:REPLACE-ME",
            FLEET_SMTP_USER="fleet",
            FLEET_SMTP_PASSWORD="REPLACE-ME",
        )
    )
    #: KEDA reads queue depth (ready + unacked) from the management API with this URL
    keda_host: str = "http://keda:REPLACE-ME@rabbitmq.fleet.svc:15672/fleet"

    @property
    def var_dir(self) -> str:
        return self.volumes["var"].path


@dataclass(frozen=True)
class Prometheus:
    """The one-host scrape config (deploy/prometheus/prometheus.yml); Kubernetes' PodMonitor scrapes as often."""

    interval: str = "15s"
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Values:
    """Everything the deploy files take that is neither a pool spec nor a setting's default."""

    #: seconds past a pool's soft-shutdown timeout before a stopping worker is killed: TERM lets
    #: running tasks finish for soft_shutdown_timeout, then the cold shutdown cancels the rest
    #: (back to their queue), stops the pool and closes the connection
    stop_margin_s: int = 15
    metrics_port: int = _DEFAULTS.metrics_port  # one port per worker process from here
    api_port: int = int(_DEFAULTS.api_bind.rsplit(":", 1)[1])
    supervisor: Supervisor = Supervisor()
    api: Workload = Workload(stop_wait_s=35, replicas=2, memory_mb=256, cpu=0.5)
    #: two beats in Kubernetes: one leads (fleet.beat), the other takes over within seconds if it dies
    beat: Workload = Workload(stop_wait_s=15, replicas=2, memory_mb=192, cpu=0.1)
    k8s: K8s = field(default_factory=K8s)
    prometheus: Prometheus = Prometheus()


VALUES = Values()
