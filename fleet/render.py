"""Pool specs -> ``deploy/supervisor`` and ``deploy/k8s``: the only way those files are made.

Every rendered object derives from :data:`fleet.pools.POOLS` plus the small :data:`VALUES`
mapping below (as a Helm chart derives everything from its values), so a pool's concurrency,
time limits or replicas change in one place. The rendered files are committed; a test fails
when they differ from a fresh render. Nothing here reads the environment: the supervisor file
takes its paths from ``%(ENV_...)s`` at run time, so the same file serves a checkout and
``/opt/fleet``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from fleet.metrics.prometheus import API_JOB, BEAT_JOB, WORKERS_JOB
from fleet.pools import POOLS, PoolSpec, beat_metrics_port, metrics_port
from fleet.settings import Settings, load_settings
from fleet.supervisor_auth import CTL_FILE, SOCKET_FILE

#: The settings' defaults, so ports are stated once (fleet/settings.py).
_DEFAULTS = load_settings({})

#: What is not a pool spec. Kubernetes-only values are under "k8s".
VALUES: dict[str, Any] = {
    # Seconds past a pool's soft-shutdown timeout before a stopping worker is killed: TERM
    # lets running tasks finish for soft_shutdown_timeout, then the cold shutdown cancels the
    # rest (back to their queue), stops the pool and closes the connection.
    "stop_margin_s": 15,
    "metrics_port": _DEFAULTS.metrics_port,  # one port per worker process from here
    "api_port": int(_DEFAULTS.api_bind.rsplit(":", 1)[1]),
    "supervisor": {
        "startsecs": 5,
        "startretries": 5,
        "api_stopwaitsecs": 35,
        "beat_stopwaitsecs": 15,
        "dev_stopwaitsecs": 5,
        "dev_priority": 100,
    },
    "k8s": {
        "namespace": "fleet",
        "image": f"fleet:{version('fleet')}",
        "uid": 10001,  # the Dockerfile's user
        # The Celery main process (consumer, event loop) beside concurrency x memory_mb.
        "main_process_memory_mb": 128,
        "cpu_limit_factor": 2,
        "api": {"replicas": 2, "memory_mb": 256, "cpu": 0.5, "gunicorn_workers": 2},
        # Two beats: one leads (fleet.beat), the other takes over within seconds if it dies.
        "beat": {"replicas": 2, "memory_mb": 192, "cpu": 0.1},
        # KEDA: min/max replicas per pool; high_priority never scales to zero (latency).
        "autoscaling": {
            "high_priority": {"min": 2, "max": 10},
            "email": {"min": 1, "max": 6},
            "reports": {"min": 0, "max": 3},
            "default": {"min": 1, "max": 8},
        },
        "slow_scale_down": ("reports",),  # long tasks: give a pod back at most every 10 minutes
        "polling_interval_s": 15,
        "fallback_failure_threshold": 3,
        # The fleet-config ConfigMap: FLEET_* settings (fleet/settings.py); paths and ports are added
        # from the values above (see config_data).
        "config": {
            "FLEET_ENV": "production",
            "FLEET_LOG_LEVEL": "info",
            "FLEET_BROKER_CONSUMER_TIMEOUT": "1800",
            "FLEET_SMTP_HOST": "smtp.example.internal",
            "FLEET_SMTP_PORT": "587",
            "FLEET_SMTP_STARTTLS": "1",
            "FLEET_MAIL_FROM": "fleet@example.internal",
        },
        # The Secret template: placeholders only, never a real secret in the repository.
        "secret": {
            "CELERY_BROKER_URL": "amqp://fleet:REPLACE-ME@rabbitmq.fleet.svc:5672/fleet",
            "CELERY_RESULT_BACKEND": "redis://:REPLACE-ME@redis.fleet.svc:6379/0",
            "FLEET_API_TOKEN": "REPLACE-ME",
            "FLEET_SMTP_USER": "fleet",
            "FLEET_SMTP_PASSWORD": "REPLACE-ME",
        },
        # KEDA reads queue depth (ready + unacked) from the management API with this URL.
        "keda_secret": {"host": "http://keda:REPLACE-ME@rabbitmq.fleet.svc:15672/fleet"},
    },
}

SUPERVISOR_FILE = "fleet.conf"
SUPERVISOR_PATH = f"deploy/supervisor/{SUPERVISOR_FILE}"
#: ``make run``'s file in development: fleet.conf plus the stand-ins of fleet/devpeers.py, never production's.
SUPERVISOR_DEV_FILE = "fleet-dev.conf"
SUPERVISOR_DEV_PATH = f"deploy/supervisor/{SUPERVISOR_DEV_FILE}"
#: development program -> (``fleet`` subcommand, what it stands in for)
DEV_PEERS = {
    "smtp": ("dev smtp", "an SMTP sink on FLEET_SMTP_HOST:FLEET_SMTP_PORT keeping mail under var/dev/mail"),
    "gateway": ("dev gateway", "a payment gateway on FLEET_PAYMENT_GATEWAY_URL honouring Idempotency-Key"),
}
_GENERATED = "Rendered by `fleet render {target}` from fleet/pools.py and fleet/render.py; do not edit."


_AUTH_PATH = f"%(ENV_FLEET_VAR_DIR)s/{CTL_FILE}"


def stop_wait(spec: PoolSpec) -> int:
    """Seconds a stopping worker gets: its soft-shutdown timeout plus the margin (fleet.shutdown)."""
    return spec.soft_shutdown_timeout + VALUES["stop_margin_s"]


# -- supervisor ---------------------------------------------------------------------------------------------------


def _section(name: str, options: Iterable[tuple[str, object]], comments: Iterable[str] = ()) -> str:
    lines = [f"[{name}]", *(f"; {c.replace('%', '%%')}" for c in comments)]
    lines += [f"{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in options]
    return "\n".join(lines)


def _program(command: str, stopwaitsecs: int, numprocs: int = 1) -> list[tuple[str, object]]:
    """The options every fleet program shares: TERM to the parent only, KILL to the group late."""
    sup = VALUES["supervisor"]
    log = "%(ENV_FLEET_VAR_DIR)s/log/%(program_name)s-%(process_num)d.log"
    return [
        ("command", f"%(ENV_FLEET_HOME)s/.venv/bin/fleet {command}"),
        ("process_name", "%(program_name)s-%(process_num)d"),
        ("numprocs", numprocs),
        ("directory", "%(ENV_FLEET_HOME)s"),
        ("autostart", True),
        ("autorestart", True),
        ("startsecs", sup["startsecs"]),
        ("startretries", sup["startretries"]),
        ("stopsignal", "TERM"),
        ("stopwaitsecs", stopwaitsecs),
        # TERM must reach only the Celery parent (a TERM to a prefork child kills its task);
        # a KILL after stopwaitsecs must take the children too, or they outlive the parent.
        ("stopasgroup", False),
        ("killasgroup", True),
        ("redirect_stderr", True),
        ("stdout_logfile", log),
        ("stdout_logfile_maxbytes", "50MB"),
        ("stdout_logfile_backups", 5),
    ]


def render_supervisor() -> dict[str, str]:
    """``deploy/supervisor/fleet.conf``: the API, one program per pool, exactly one beat."""
    sup = VALUES["supervisor"]
    sections = [
        "; " + _GENERATED.format(target="supervisor"),
        "; Needs FLEET_HOME (the checkout or /opt/fleet, holding .venv), FLEET_VAR_DIR (state, logs,\n"
        "; supervisord's socket and pid) and FLEET_USER (who runs the programs) in the environment,\n"
        "; and the socket's credentials written by `fleet supervisor-auth` (FLEET_VAR_DIR/supervisorctl.conf,\n"
        "; also supervisorctl's config): `make run` does all that.",
        _section("include", [("files", _AUTH_PATH)]),
        _section("unix_http_server", [("file", f"%(ENV_FLEET_VAR_DIR)s/{SOCKET_FILE}"), ("chmod", "0700")]),
        _section(
            "supervisord",
            [
                ("nodaemon", True),
                # Started as root, supervisord drops to this user; started as that user, it stays.
                ("user", "%(ENV_FLEET_USER)s"),
                ("logfile", "%(ENV_FLEET_VAR_DIR)s/log/supervisord.log"),
                ("pidfile", "%(ENV_FLEET_VAR_DIR)s/supervisord.pid"),
                ("childlogdir", "%(ENV_FLEET_VAR_DIR)s/log"),
                ("directory", "%(ENV_FLEET_HOME)s"),
            ],
        ),
        _section(
            "rpcinterface:supervisor",
            [("supervisor.rpcinterface_factory", "supervisor.rpcinterface:make_main_rpcinterface")],
        ),
        _section("group:fleet", [("programs", ",".join(["api", "beat", *POOLS]))]),
        _section(
            "program:api",
            _program("api", sup["api_stopwaitsecs"]),
            ["gunicorn on FLEET_API_BIND"],
        ),
        _section(
            "program:beat",
            _program("beat", sup["beat_stopwaitsecs"]),
            [
                "one beat per host; more may run anywhere (Kubernetes runs two): the leader sends, the rest stand by",
                f"metrics: FLEET_METRICS_PORT + {beat_metrics_port(0)}",
            ],
        ),
    ]
    for spec in POOLS.values():
        first = metrics_port(0, spec.name, 0)
        ports = f"FLEET_METRICS_PORT + {first}" + (f"..{first + spec.replicas - 1}" if spec.replicas > 1 else "")
        comments = [spec.rationale, f"metrics: {ports} (fleet.pools.metrics_port of --index)"]
        options = _program(f"worker {spec.name} --index %(process_num)d", stop_wait(spec), spec.replicas)
        sections.append(_section(f"program:{spec.name}", options, comments))
    return {SUPERVISOR_FILE: "\n\n".join(sections) + "\n", SUPERVISOR_DEV_FILE: _render_dev()}


def _render_dev() -> str:
    """The development file: everything in fleet.conf, plus the demo's peers in a group of their own."""
    sections = [
        "; " + _GENERATED.format(target="supervisor"),
        f"; Development only (`make run` with FLEET_ENV=development): {SUPERVISOR_FILE} plus loopback\n"
        "; stand-ins for the peers the demo tasks talk to. Production runs fleet.conf, which has none.",
        # supervisord reads one level of includes, so the credentials are included here too
        _section("include", [("files", f"{SUPERVISOR_FILE} {_AUTH_PATH}")]),
        # Below the default 999: the stand-ins start before the workers and stop after them, so a
        # task finishing during a warm shutdown can still reach them.
        _section("group:dev", [("programs", ",".join(DEV_PEERS)), ("priority", VALUES["supervisor"]["dev_priority"])]),
    ]
    stopwait = VALUES["supervisor"]["dev_stopwaitsecs"]
    for name, (command, what) in DEV_PEERS.items():
        sections.append(_section(f"program:{name}", _program(command, stopwait), [what]))
    return "\n\n".join(sections) + "\n"


def banner(settings: Settings) -> str:
    """What ``make run`` prints before starting: where the API and every worker's metrics are."""
    api = f"http://{settings.api_bind.replace('0.0.0.0', '127.0.0.1')}"
    lines = [f"fleet API:     {api}   (health: {api}/healthz)", "worker metrics:"]
    for spec in POOLS.values():
        ports = [str(metrics_port(settings.metrics_port, spec.name, i)) for i in range(spec.replicas)]
        lines.append(f"  {spec.name:<14} {' '.join(f'http://127.0.0.1:{port}/metrics' for port in ports)}")
    lines += [
        "try it:",
        f"  curl -s -X POST {api}/api/tasks -H 'Content-Type: application/json' \\",
        """       -d '{"task": "tasks.process_data", "args": [42]}'""",
        f"logs: {settings.var_dir / 'log'}/",
        f"control: .venv/bin/supervisorctl -c {settings.var_dir / CTL_FILE} status",
        "Ctrl-C stops the fleet warmly (running tasks finish first).",
    ]
    return "\n".join(lines)


# -- Kubernetes ---------------------------------------------------------------------------------------------------


def dns_name(pool: str) -> str:
    return pool.replace("_", "-")


def worker_name(spec: PoolSpec) -> str:
    return f"fleet-worker-{dns_name(spec.name)}"


def worker_memory_mb(spec: PoolSpec) -> int:
    """A worker pod's memory: concurrency x the per-process cap, plus the Celery main process."""
    return spec.concurrency * spec.memory_mb + VALUES["k8s"]["main_process_memory_mb"]


def keda_target(spec: PoolSpec) -> int:
    """Messages one pod holds (running + prefetched): the queue length one replica absorbs."""
    return spec.concurrency * spec.prefetch_multiplier


def _cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _resources(cpu: float, memory_mb: int) -> dict[str, Any]:
    """Memory request = limit (no overcommit surprises); CPU may burst to the limit factor."""
    factor = VALUES["k8s"]["cpu_limit_factor"]
    return {
        "requests": {"cpu": _cpu(cpu), "memory": f"{memory_mb}Mi"},
        "limits": {"cpu": _cpu(cpu * factor), "memory": f"{memory_mb}Mi"},
    }


def _meta(name: str, component: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "fleet", "app.kubernetes.io/component": component, **(extra or {})}
    return {
        "name": name,
        "namespace": VALUES["k8s"]["namespace"],
        "labels": {**labels, "app.kubernetes.io/part-of": "fleet"},
    }


def _selector(meta: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in meta["labels"].items() if k != "app.kubernetes.io/part-of"}


_VOLUMES = {  # name -> (mount path, emptyDir); the root filesystem is read-only
    "tmp": ("/tmp", {"sizeLimit": "256Mi"}),
    "var": ("/var/lib/fleet", {"sizeLimit": "1Gi"}),
    # Each worker keeps its multiprocess metric files under FLEET_VAR_DIR/metrics: memory-backed.
    "metrics": ("/var/lib/fleet/metrics", {"medium": "Memory", "sizeLimit": "64Mi"}),
}


def config_data() -> dict[str, str]:
    """The settings every pod gets from the fleet-config ConfigMap."""
    k8s = VALUES["k8s"]
    return {
        **k8s["config"],
        "FLEET_VAR_DIR": _VOLUMES["var"][0],
        "FLEET_API_BIND": f"0.0.0.0:{VALUES['api_port']}",
        "FLEET_API_WORKERS": str(k8s["api"]["gunicorn_workers"]),
        "FLEET_METRICS_PORT": str(VALUES["metrics_port"]),
    }


def _config_checksum() -> str:
    """Changes when the ConfigMap does, so pods roll when their settings change."""
    return hashlib.sha256(json.dumps(config_data(), sort_keys=True).encode()).hexdigest()


def _exec_probe(*args: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": ["fleet", "health", *args]},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _pod(meta: Mapping[str, Any], container: dict[str, Any], grace: int, spread: bool = True) -> dict[str, Any]:
    """A hardened pod template around one container: non-root, read-only root, no capabilities,
    RuntimeDefault seccomp, no service-account token, emptyDirs for what must be written."""
    k8s = VALUES["k8s"]
    container = {
        "name": container.pop("name"),
        "image": k8s["image"],
        "imagePullPolicy": "IfNotPresent",
        "command": container.pop("command"),
        "envFrom": [{"configMapRef": {"name": "fleet-config"}}, {"secretRef": {"name": "fleet-secrets"}}],
        **container,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": name, "mountPath": path} for name, (path, _) in _VOLUMES.items()],
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": k8s["uid"],
            "runAsGroup": k8s["uid"],
            "fsGroup": k8s["uid"],
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": name, "emptyDir": empty_dir} for name, (_, empty_dir) in _VOLUMES.items()],
    }
    if spread:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": _selector(meta)},
            }
        ]
    return {
        "metadata": {"labels": meta["labels"], "annotations": {"checksum/config": _config_checksum()}},
        "spec": spec,
    }


def _deployment(meta: dict[str, Any], replicas: int, pod: dict[str, Any], strategy: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _selector(meta)},
            "strategy": strategy,
            "template": pod,
        },
    }


def _pdb(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": dict(meta),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(meta)}},
    }


_ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def worker_objects(spec: PoolSpec) -> list[dict[str, Any]]:
    """A pool's Deployment, PodDisruptionBudget and KEDA ScaledObject."""
    k8s = VALUES["k8s"]
    meta = _meta(worker_name(spec), "worker", {"fleet/pool": spec.name})
    grace = stop_wait(spec)
    container = {
        "name": "worker",
        # Exec form, no shell: the worker is PID 1 and gets the TERM that starts its warm shutdown.
        "command": ["fleet", "worker", spec.name],
        "ports": [
            {"name": "metrics", "containerPort": metrics_port(VALUES["metrics_port"], spec.name), "protocol": "TCP"}
        ],
        "resources": _resources(spec.cpu, worker_memory_mb(spec)),
        # Files only (fleet.health): a broker outage must not fail these and crash-loop the pods.
        "startupProbe": _exec_probe("--liveness", period=5, failures=24),
        "livenessProbe": _exec_probe("--liveness", period=15, failures=3),
        "readinessProbe": _exec_probe("--readiness", period=10, failures=2),
    }
    scale = k8s["autoscaling"][spec.name]
    behavior: dict[str, Any] = {}
    if spec.name in k8s["slow_scale_down"]:
        behavior = {
            "scaleDown": {
                "stabilizationWindowSeconds": 1800,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}],
            }
        }
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": dict(meta),
        "spec": {
            "scaleTargetRef": {"name": meta["name"]},
            "pollingInterval": k8s["polling_interval_s"],
            # Above the grace period: a pod scaled away gets to finish its warm shutdown first.
            "cooldownPeriod": grace + 60,
            "minReplicaCount": scale["min"],
            "maxReplicaCount": scale["max"],
            # If RabbitMQ's management API cannot be read, hold the spec's replicas.
            "fallback": {"failureThreshold": k8s["fallback_failure_threshold"], "replicas": spec.replicas},
            "triggers": [
                {
                    "type": "rabbitmq",
                    # http: the management API counts unacked (running + prefetched) messages too.
                    "metadata": {
                        "protocol": "http",
                        "mode": "QueueLength",
                        "value": str(keda_target(spec)),
                        "queueName": queue,
                    },
                    "authenticationRef": {"name": "fleet-rabbitmq"},
                }
                for queue in spec.queues
            ],
        },
    }
    if behavior:
        scaled["spec"]["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    pod = _pod(meta, container, grace)
    return [_deployment(meta, spec.replicas, pod, _ROLLING), _pdb(meta), scaled]


def api_objects() -> list[dict[str, Any]]:
    api = VALUES["k8s"]["api"]
    meta = _meta("fleet-api", "api")
    container = {
        "name": "api",
        "command": ["fleet", "api"],
        "ports": [{"name": "http", "containerPort": VALUES["api_port"], "protocol": "TCP"}],
        "resources": _resources(api["cpu"], api["memory_mb"]),
        "startupProbe": _http_probe("/healthz", period=2, failures=30),
        "livenessProbe": _http_probe("/healthz", period=10, failures=3),
        "readinessProbe": _http_probe("/readyz", period=5, failures=2),
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": dict(meta),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(meta),
            "ports": [{"name": "http", "port": VALUES["api_port"], "targetPort": "http", "protocol": "TCP"}],
        },
    }
    grace = VALUES["supervisor"]["api_stopwaitsecs"]
    return [_deployment(meta, api["replicas"], _pod(meta, container, grace), _ROLLING), service, _pdb(meta)]


def beat_objects() -> list[dict[str, Any]]:
    """Two beats on different nodes: the one holding the broker's leader lock sends (fleet.beat),
    so a rolling update or a lost node leaves a standby that takes over within seconds."""
    beat = VALUES["k8s"]["beat"]
    meta = _meta("fleet-beat", "beat")
    container = {
        "name": "beat",
        "command": ["fleet", "beat"],
        "ports": [
            {"name": "beat-metrics", "containerPort": beat_metrics_port(VALUES["metrics_port"]), "protocol": "TCP"}
        ],
        "resources": _resources(beat["cpu"], beat["memory_mb"]),
    }
    pod = _pod(meta, container, VALUES["supervisor"]["beat_stopwaitsecs"])
    return [_deployment(meta, beat["replicas"], pod, _ROLLING), _pdb(meta)]


def _namespace() -> dict[str, Any]:
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": VALUES["k8s"]["namespace"], "labels": labels}}


def _config_map() -> dict[str, Any]:
    meta = _meta("fleet-config", "config")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": config_data()}


def _secrets() -> list[dict[str, Any]]:
    k8s = VALUES["k8s"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(name, "secret"),
            "type": "Opaque",
            "stringData": dict(data),
        }
        for name, data in (("fleet-secrets", k8s["secret"]), ("fleet-keda-rabbitmq", k8s["keda_secret"]))
    ]


def _trigger_auth() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _meta("fleet-rabbitmq", "autoscaling"),
        "spec": {"secretTargetRef": [{"parameter": "host", "name": "fleet-keda-rabbitmq", "key": "host"}]},
    }


def _pod_monitor() -> dict[str, Any]:
    meta = _meta("fleet", "monitoring")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "fleet"}},
            # The job and pool labels the alert rules and dashboard read (fleet.metrics.prometheus).
            "podMetricsEndpoints": [
                {  # every worker
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": "15s",
                    "honorLabels": True,
                    "relabelings": [
                        {"targetLabel": "job", "replacement": WORKERS_JOB},
                        {"sourceLabels": ["__meta_kubernetes_pod_label_fleet_pool"], "targetLabel": "pool"},
                    ],
                },
                {  # every beat
                    "port": "beat-metrics",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [{"targetLabel": "job", "replacement": BEAT_JOB}],
                },
                {  # the API
                    "port": "http",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [{"targetLabel": "job", "replacement": API_JOB}],
                },
            ],
        },
    }


def k8s_objects() -> dict[str, list[dict[str, Any]]]:
    """File name -> the objects in it, in the order ``kubectl apply -f deploy/k8s/`` wants."""
    files = {
        "00-namespace.yaml": [_namespace()],
        "10-config.yaml": [_config_map()],
        # Not *.yaml: `kubectl apply -f deploy/k8s/` must not apply placeholders over real secrets.
        "secrets.yaml.example": _secrets(),
        "20-keda-auth.yaml": [_trigger_auth()],
        "30-api.yaml": api_objects(),
        "30-beat.yaml": beat_objects(),
    }
    for spec in POOLS.values():
        files[f"40-worker-{dns_name(spec.name)}.yaml"] = worker_objects(spec)
    files["50-podmonitor.yaml"] = [_pod_monitor()]
    return files


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no &anchors/*aliases where two objects share a mapping."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_k8s() -> dict[str, str]:
    header = f"# {_GENERATED.format(target='k8s')}\n"
    return {
        name: header + yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
        for name, objects in k8s_objects().items()
    }


# -- files --------------------------------------------------------------------------------------------------------

RENDERERS = {"supervisor": render_supervisor, "k8s": render_k8s}


def drift(rendered: Mapping[str, str], directory: Path) -> list[str]:
    """How ``directory`` differs from ``rendered``: changed, missing and extra files."""
    problems = [
        f"{directory / name}: {'differs from' if (directory / name).exists() else 'missing in'} a fresh render"
        for name, text in rendered.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
    if directory.is_dir():
        problems += [
            f"{path}: not rendered any more" for path in sorted(directory.iterdir()) if path.name not in rendered
        ]
    return problems


def write(rendered: Mapping[str, str], directory: Path) -> list[Path]:
    """Write the rendered files, removing any the render no longer makes (the folder is the render's)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.is_file() and path.name not in rendered:
            path.unlink()
    written = []
    for name, text in rendered.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written
