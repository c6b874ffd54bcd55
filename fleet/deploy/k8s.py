"""``deploy/k8s``: a hardened Deployment, PodDisruptionBudget and KEDA ScaledObject per pool, the
API and two beats, their ConfigMap, the Secret template and the PodMonitor, from pools + values."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml

from fleet.deploy.files import GENERATED
from fleet.deploy.prometheus import API_JOB, BEAT_JOB, WORKERS_JOB
from fleet.deploy.supervisor import stop_wait
from fleet.deploy.values import VALUES, Probes, Volume
from fleet.pools import POOLS, PoolSpec, beat_metrics_port, metrics_port


def dns_name(pool: str) -> str:
    return pool.replace("_", "-")


def worker_name(spec: PoolSpec) -> str:
    return f"fleet-worker-{dns_name(spec.name)}"


def worker_memory_mb(spec: PoolSpec) -> int:
    """A worker pod's memory: concurrency x the per-process cap, plus the Celery main process."""
    return spec.concurrency * spec.memory_mb + VALUES.k8s.main_process_memory_mb


def keda_target(spec: PoolSpec) -> int:
    """Messages one pod holds (running + prefetched): the queue length one replica absorbs."""
    return spec.concurrency * spec.prefetch_multiplier


def _cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _resources(cpu: float, memory_mb: int) -> dict[str, Any]:
    """Memory request = limit (no overcommit surprises); CPU may burst to the limit factor."""
    factor = VALUES.k8s.cpu_limit_factor
    return {
        "requests": {"cpu": _cpu(cpu), "memory": f"{memory_mb}Mi"},
        "limits": {"cpu": _cpu(cpu * factor), "memory": f"{memory_mb}Mi"},
    }


def _meta(name: str, component: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "fleet", "app.kubernetes.io/component": component, **(extra or {})}
    return {
        "name": name,
        "namespace": VALUES.k8s.namespace,
        "labels": {**labels, "app.kubernetes.io/part-of": "fleet"},
    }


def _selector(meta: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in meta["labels"].items() if k != "app.kubernetes.io/part-of"}


def _empty_dir(volume: Volume) -> dict[str, str]:
    return {"medium": "Memory", "sizeLimit": volume.size} if volume.memory else {"sizeLimit": volume.size}


def config_data() -> dict[str, str]:
    """The settings every pod gets from the fleet-config ConfigMap."""
    return {
        **VALUES.k8s.config,
        "FLEET_VAR_DIR": VALUES.k8s.var_dir,
        "FLEET_API_BIND": f"0.0.0.0:{VALUES.api_port}",
        "FLEET_API_WORKERS": str(VALUES.k8s.api_gunicorn_workers),
        "FLEET_API_WORKER_CLASS": VALUES.k8s.api_gunicorn_worker_class,
        "FLEET_API_THREADS": str(VALUES.k8s.api_gunicorn_threads),
        "FLEET_API_CONNECTIONS": str(VALUES.k8s.api_gunicorn_connections),
        "FLEET_API_CONFIRM_STREAMS": str(VALUES.k8s.api_confirm_streams),
        "FLEET_METRICS_PORT": str(VALUES.metrics_port),
    }


def _config_checksum() -> str:
    """Changes when the ConfigMap does, so pods roll when their settings change."""
    return hashlib.sha256(json.dumps(config_data(), sort_keys=True).encode()).hexdigest()


def _probes(probes: Probes, *actions: dict[str, Any]) -> dict[str, Any]:
    """startupProbe, livenessProbe, readinessProbe with the timings of ``probes``."""
    timings = (probes.startup, probes.liveness, probes.readiness)
    return {
        f"{kind}Probe": {
            **action,
            "periodSeconds": probe.period_s,
            "timeoutSeconds": probes.timeout_s,
            "failureThreshold": probe.failures,
        }
        for kind, probe, action in zip(("startup", "liveness", "readiness"), timings, actions, strict=True)
    }


def _exec(*args: str) -> dict[str, Any]:
    return {"exec": {"command": ["fleet", "health", *args]}}


def _http_get(path: str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}}


def _pod(meta: Mapping[str, Any], container: dict[str, Any], grace: int, spread: bool = True) -> dict[str, Any]:
    """A hardened pod template around one container: non-root, read-only root, no capabilities,
    RuntimeDefault seccomp, no service-account token, emptyDirs for what must be written."""
    k8s = VALUES.k8s
    container = {
        "name": container.pop("name"),
        "image": k8s.image,
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
        "volumeMounts": [{"name": name, "mountPath": volume.path} for name, volume in k8s.volumes.items()],
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": k8s.uid,
            "runAsGroup": k8s.uid,
            "fsGroup": k8s.uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": name, "emptyDir": _empty_dir(volume)} for name, volume in k8s.volumes.items()],
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
        "spec": {
            "maxUnavailable": VALUES.k8s.rollout.pdb_max_unavailable,
            "selector": {"matchLabels": _selector(meta)},
        },
    }


def _rolling() -> dict[str, Any]:
    rollout = VALUES.k8s.rollout
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": rollout.max_surge, "maxUnavailable": rollout.max_unavailable},
    }


def worker_objects(spec: PoolSpec) -> list[dict[str, Any]]:
    """A pool's Deployment, PodDisruptionBudget and KEDA ScaledObject."""
    scaling = VALUES.k8s.autoscaling
    meta = _meta(worker_name(spec), "worker", {"fleet/pool": spec.name})
    grace = stop_wait(spec)
    container = {
        "name": "worker",
        # Exec form, no shell: the worker is PID 1 and gets the TERM that starts its warm shutdown.
        "command": ["fleet", "worker", spec.name],
        "ports": [
            {"name": "metrics", "containerPort": metrics_port(VALUES.metrics_port, spec.name), "protocol": "TCP"}
        ],
        "resources": _resources(spec.cpu, worker_memory_mb(spec)),
        # Files only (fleet.worker.health): a broker outage must not fail these and crash-loop the pods.
        **_probes(VALUES.k8s.worker_probes, _exec("--liveness"), _exec("--liveness"), _exec("--readiness")),
    }
    behavior: dict[str, Any] = {}
    if spec.slow_scale_down:
        behavior = {
            "scaleDown": {
                "stabilizationWindowSeconds": scaling.slow_scale_down.stabilization_s,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": scaling.slow_scale_down.period_s}],
            }
        }
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": dict(meta),
        "spec": {
            "scaleTargetRef": {"name": meta["name"]},
            "pollingInterval": scaling.polling_interval_s,
            # Above the grace period: a pod scaled away gets to finish its warm shutdown first.
            "cooldownPeriod": grace + scaling.cooldown_margin_s,
            "minReplicaCount": spec.min_replicas,
            "maxReplicaCount": spec.max_replicas,
            # If RabbitMQ's management API cannot be read, hold the spec's replicas.
            "fallback": {"failureThreshold": scaling.fallback_failure_threshold, "replicas": spec.replicas},
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
    return [_deployment(meta, spec.replicas, pod, _rolling()), _pdb(meta), scaled]


def api_objects() -> list[dict[str, Any]]:
    api = VALUES.api
    meta = _meta("fleet-api", "api")
    container = {
        "name": "api",
        "command": ["fleet", "api"],
        "ports": [{"name": "http", "containerPort": VALUES.api_port, "protocol": "TCP"}],
        "resources": _resources(api.cpu, api.memory_mb),
        **_probes(VALUES.k8s.api_probes, _http_get("/healthz"), _http_get("/healthz"), _http_get("/readyz")),
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": dict(meta),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(meta),
            "ports": [{"name": "http", "port": VALUES.api_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    grace = api.stop_wait_s
    return [_deployment(meta, api.replicas, _pod(meta, container, grace), _rolling()), service, _pdb(meta)]


def beat_objects() -> list[dict[str, Any]]:
    """Two beats on different nodes: the one holding the broker's leader lock sends (fleet.beat),
    so a rolling update or a lost node leaves a standby that takes over within seconds."""
    beat = VALUES.beat
    meta = _meta("fleet-beat", "beat")
    container = {
        "name": "beat",
        "command": ["fleet", "beat"],
        "ports": [{"name": "beat-metrics", "containerPort": beat_metrics_port(VALUES.metrics_port), "protocol": "TCP"}],
        "resources": _resources(beat.cpu, beat.memory_mb),
    }
    pod = _pod(meta, container, beat.stop_wait_s)
    return [_deployment(meta, beat.replicas, pod, _rolling()), _pdb(meta)]


def _namespace() -> dict[str, Any]:
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": VALUES.k8s.namespace, "labels": labels}}


def _config_map() -> dict[str, Any]:
    meta = _meta("fleet-config", "config")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": config_data()}


def _secrets() -> list[dict[str, Any]]:
    k8s = VALUES.k8s
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(name, "secret"),
            "type": "Opaque",
            "stringData": dict(data),
        }
        for name, data in (("fleet-secrets", k8s.secret), ("fleet-keda-rabbitmq", {"host": k8s.keda_host}))
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
            # The job and pool labels the alert rules and dashboard read (fleet.deploy.prometheus).
            "podMetricsEndpoints": [
                {  # every worker
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": VALUES.prometheus.interval,
                    "honorLabels": True,
                    "relabelings": [
                        {"targetLabel": "job", "replacement": WORKERS_JOB},
                        {"sourceLabels": ["__meta_kubernetes_pod_label_fleet_pool"], "targetLabel": "pool"},
                    ],
                },
                {  # every beat
                    "port": "beat-metrics",
                    "path": "/metrics",
                    "interval": VALUES.prometheus.interval,
                    "relabelings": [{"targetLabel": "job", "replacement": BEAT_JOB}],
                },
                {  # the API
                    "port": "http",
                    "path": "/metrics",
                    "interval": VALUES.prometheus.interval,
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
    header = f"# {GENERATED.format(target='k8s')}\n"
    return {
        name: header + yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
        for name, objects in k8s_objects().items()
    }
