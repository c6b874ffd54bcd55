"""The rendered deployment files: committed = a fresh render, valid offline, and true to the pool specs."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from supervisor.options import ServerOptions

from fleet.deploy import RENDERERS, files, k8s, pooltable, supervisor
from fleet.deploy.prometheus import API_JOB, BEAT_JOB, WORKERS_JOB
from fleet.deploy.values import VALUES
from fleet.pools import POOLS, PoolSpec, beat_metrics_port, metrics_port
from fleet.settings import Settings
from fleet.testing.processes import FLEET

pytestmark = pytest.mark.pure  # the fast tier: no service needed

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
#: the oldest Kubernetes the manifests promise to fit, and the newest kubernetes-validate knows
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "custom-resources.schema.json").read_text())
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor"}
SETTINGS_ENV = {f.metadata["env"] for f in fields(Settings) if "env" in f.metadata}


# -- committed = rendered ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", sorted(RENDERERS))
def test_committed_files_equal_a_fresh_render(target: str) -> None:
    assert files.drift(RENDERERS[target](), DEPLOY / target) == [], f"run `fleet render {target}` and commit"


def test_readme_pool_table_equals_the_specs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert pooltable.with_table(readme) == readme, "run `make render` (fleet pools --write-readme README.md)"
    for spec in POOLS.values():
        row = f"| `{spec.name}` | {spec.pool} | {spec.concurrency} |"
        assert row in readme, row
    assert "| `email` | threads | 16 | 4 | 50 / 60 s | never |" in readme, "threads keep limits (fleet.worker.limits)"


def test_fleet_pools_prints_limits_and_child_recycling() -> None:
    done = subprocess.run([FLEET, "pools"], capture_output=True, text=True, timeout=60, check=True)
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "child recycled" in lines["pool"]
    assert "every 20 tasks or past 512 MB" in lines["reports"] and "540 / 600 s" in lines["reports"]
    assert "50 / 60 s" in lines["email"] and "never" in lines["email"]
    assert "110 / 120 s" in lines["default"] and "past 256 MB" in lines["default"], "a threaded process is recycled"


def test_render_check_reports_drift_and_write_repairs_it(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "leftover.yaml").write_text("kind: Nothing\n")

    def check() -> subprocess.CompletedProcess[str]:
        argv = [FLEET, "render", "k8s", "--check", "--out", str(out)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    stale = check()
    assert stale.returncode == 1 and "leftover.yaml: not rendered any more" in stale.stderr, stale.stderr
    assert "40-worker-email.yaml: missing in a fresh render" in stale.stderr
    subprocess.run([FLEET, "render", "k8s", "--out", str(out)], check=True, capture_output=True, timeout=60)
    assert not (out / "leftover.yaml").exists()
    assert check().returncode == 0


# -- supervisor ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands for /opt/fleet (supervisord wants FLEET_HOME to exist)."""
    path = tmp_path_factory.mktemp("opt") / "fleet"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def programs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch, home: Path
) -> dict[str, list]:
    """The committed supervisor file as supervisord itself reads it: program -> its process configs."""
    var = tmp_path_factory.mktemp("supervisor-var")
    (var / "log").mkdir()
    monkeypatch_module.setenv("FLEET_HOME", str(home))
    monkeypatch_module.setenv("FLEET_VAR_DIR", str(var))
    monkeypatch_module.setenv("FLEET_USER", getpass.getuser())
    options = ServerOptions()
    options.realize(args=["-c", str(DEPLOY / "supervisor" / supervisor.SUPERVISOR_FILE)])
    (group,) = options.process_group_configs
    assert group.name == "fleet"
    found: dict[str, list] = {}
    for process in group.process_configs:
        found.setdefault(process.name.rsplit("-", 1)[0], []).append(process)
    return found


def _read_supervisor(file: str) -> ServerOptions:
    options = ServerOptions()
    options.realize(args=["-c", str(DEPLOY / "supervisor" / file)])
    return options


def test_development_config_adds_the_stand_ins_and_production_has_none(programs: dict[str, list], home: Path) -> None:
    """`make run` in development runs fleet.conf plus the SMTP sink and gateway; nothing else has them."""
    groups = {group.name: group for group in _read_supervisor(supervisor.SUPERVISOR_DEV_FILE).process_group_configs}
    assert set(groups) == {"fleet", "dev"}
    assert groups["dev"].priority < groups["fleet"].priority, "started first, stopped last"
    assert [p.name for p in groups["fleet"].process_configs] == [p.name for ps in programs.values() for p in ps]
    assert sorted(p.command for p in groups["dev"].process_configs) == [
        f"{home}/.venv/bin/fleet dev gateway",
        f"{home}/.venv/bin/fleet dev smtp",
    ]
    assert "fleet dev" not in (DEPLOY / "supervisor" / supervisor.SUPERVISOR_FILE).read_text()
    assert not [p for p in (DEPLOY / "k8s").iterdir() if "fleet dev" in p.read_text() or "devpeers" in p.read_text()]


def test_supervisord_drops_to_fleet_user_and_authenticates_its_socket(programs: dict[str, list]) -> None:
    """No CRIT at start: the user is stated, and the socket needs the per-installation password."""
    from fleet.deploy.supervisor_auth import ensure_auth

    var = Path(os.environ["FLEET_VAR_DIR"])  # the programs fixture's
    ctl = ensure_auth(var)
    assert ctl.stat().st_mode & 0o777 == 0o600
    assert ensure_auth(var).read_text() == ctl.read_text(), "made once, kept across runs"
    options = _read_supervisor(supervisor.SUPERVISOR_FILE)
    assert options.uid == os.getuid()
    (server,) = options.server_configs
    assert server["username"] == "fleet" and len(server["password"]) >= 24


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_supervisor_runs_the_api_one_beat_and_every_pool(programs: dict[str, list], home: Path) -> None:
    assert set(programs) == {"api", "beat", *POOLS}
    assert [p.command for p in programs["beat"]] == [f"{home}/.venv/bin/fleet beat"], "one beat per host"
    assert [p.command for p in programs["api"]] == [f"{home}/.venv/bin/fleet api"]


@pytest.mark.parametrize("spec", POOLS.values(), ids=list(POOLS))
def test_supervisor_pool_programs_follow_the_spec(programs: dict[str, list], spec: PoolSpec, home: Path) -> None:
    processes = programs[spec.name]
    assert len(processes) == spec.replicas, "numprocs = replicas"
    assert [p.command for p in processes] == [
        f"{home}/.venv/bin/fleet worker {spec.name} --index {i}" for i in range(spec.replicas)
    ], "a unique node name (and metrics port) per process"
    for process in processes:
        assert process.stopsignal == 15, "TERM starts Celery's soft shutdown (fleet.worker.shutdown)"
        # derived from the soft shutdown, not the hard limit: a rollout does not wait 10 minutes
        assert process.stopwaitsecs == spec.soft_shutdown_timeout + VALUES.stop_margin_s
        assert process.stopwaitsecs < spec.time_limit
        assert process.stopasgroup is False, "a TERM to prefork children would kill running tasks"
        assert process.killasgroup is True, "a late KILL must not leave children behind"
        assert process.startsecs > 0 and process.autorestart
        assert process.directory == str(home)
        assert process.stdout_logfile.endswith(f"/log/{process.name}.log")


def test_metrics_ports_of_supervised_workers_are_unique() -> None:
    ports = [metrics_port(9808, spec.name, i) for spec in POOLS.values() for i in range(spec.replicas)]
    assert len(set(ports)) == len(ports) == sum(spec.replicas for spec in POOLS.values())


# -- Kubernetes ----------------------------------------------------------------------------------------------------


def _objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "k8s").iterdir()):
        found += [(path.name, obj) for obj in yaml.safe_load_all(path.read_text()) if obj]
    return found


OBJECTS = _objects()


def _find(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("file", "obj"), OBJECTS, ids=[f"{file}:{obj['kind']}/{obj['metadata']['name']}" for file, obj in OBJECTS]
)
def test_every_manifest_validates_offline(file: str, obj: dict[str, Any], version: str) -> None:
    if obj["kind"] in CUSTOM_KINDS:
        jsonschema.validate(obj, CUSTOM_SCHEMA)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_custom_resource_schema_refuses_a_misspelt_keda_field() -> None:
    scaled = json.loads(json.dumps(_find("ScaledObject", "fleet-worker-email")))
    scaled["spec"]["triggers"][0]["metadata"]["queueLenght"] = "5"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, CUSTOM_SCHEMA)


def test_strict_kubernetes_validation_refuses_an_unknown_field() -> None:
    deployment = json.loads(json.dumps(_find("Deployment", "fleet-api")))
    deployment["spec"]["template"]["spec"]["containers"][0]["comand"] = ["fleet"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _mebibytes(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("spec", POOLS.values(), ids=list(POOLS))
def test_worker_deployment_matches_the_pool_spec(spec: PoolSpec) -> None:
    deployment = _find("Deployment", k8s.worker_name(spec))
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert container["command"] == ["fleet", "worker", spec.name], "exec form, the worker as PID 1"
    assert deployment["spec"]["replicas"] == spec.replicas
    memory = spec.concurrency * spec.memory_mb + VALUES.k8s.main_process_memory_mb
    resources = container["resources"]
    assert _mebibytes(resources["limits"]["memory"]) == _mebibytes(resources["requests"]["memory"]) == memory
    assert _cores(resources["requests"]["cpu"]) == spec.cpu
    assert _cores(resources["limits"]["cpu"]) >= spec.cpu
    assert pod["terminationGracePeriodSeconds"] == supervisor.stop_wait(spec) > spec.soft_shutdown_timeout
    assert container["livenessProbe"]["exec"]["command"] == ["fleet", "health", "--liveness"]
    assert container["startupProbe"]["exec"]["command"] == ["fleet", "health", "--liveness"]
    assert container["readinessProbe"]["exec"]["command"] == ["fleet", "health", "--readiness"]
    assert [p["name"] for p in container["ports"]] == ["metrics"]


@pytest.mark.parametrize(
    "deployment", [o for _, o in OBJECTS if o["kind"] == "Deployment"], ids=lambda d: d["metadata"]["name"]
)
def test_every_pod_is_hardened(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == VALUES.k8s.uid != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/fleet", "/var/lib/fleet/metrics"} <= mounts
    assert all("emptyDir" in volume for volume in pod["volumes"])
    assert container["image"] == VALUES.k8s.image
    assert container["command"][0] == "fleet" and isinstance(container["command"], list)


@pytest.mark.parametrize("spec", POOLS.values(), ids=list(POOLS))
def test_keda_scales_each_pool_on_its_queue(spec: PoolSpec) -> None:
    name = k8s.worker_name(spec)
    scaled = _find("ScaledObject", name)["spec"]
    grace = _find("Deployment", name)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert scaled["scaleTargetRef"] == {"name": name}
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"] == {
        "protocol": "http",  # counts unacked (running + prefetched) messages too
        "mode": "QueueLength",
        "value": str(spec.concurrency * spec.prefetch_multiplier),
        "queueName": spec.queues[0],
    }
    auth = _find("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    secret = [o for file, o in OBJECTS if file.endswith(".example") and o["metadata"]["name"] == ref["name"]]
    assert secret and ref["key"] in secret[0]["stringData"]
    assert scaled["cooldownPeriod"] > grace
    assert scaled["fallback"]["replicas"] == spec.replicas
    assert scaled["minReplicaCount"] <= spec.replicas <= scaled["maxReplicaCount"]
    if spec.name == "high_priority":
        assert scaled["minReplicaCount"] >= 1, "latency: never scaled to zero"
    if spec.name == "reports":
        scale_down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 600}]
    pdb = _find("PodDisruptionBudget", name)
    assert pdb["spec"]["selector"] == _find("Deployment", name)["spec"]["selector"]


def test_api_beat_and_monitoring() -> None:
    api = _find("Deployment", "fleet-api")
    container = _container(api)
    assert container["command"] == ["fleet", "api"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = _find("Service", "fleet-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    beats = [o for _, o in OBJECTS if o["kind"] == "Deployment" and _container(o)["command"] == ["fleet", "beat"]]
    assert len(beats) == 1 and beats[0]["spec"]["replicas"] == 2, "a leader and a standby (fleet.beat)"
    assert beats[0]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "a beat stays up during a rollout"
    assert "topologySpreadConstraints" in beats[0]["spec"]["template"]["spec"], "on different nodes"
    beat_port = _container(beats[0])["ports"][0]
    assert beat_port["containerPort"] == beat_metrics_port(VALUES.metrics_port)
    monitor = _find("PodMonitor", "fleet")["spec"]
    endpoints = {endpoint["port"]: endpoint for endpoint in monitor["podMetricsEndpoints"]}
    assert endpoints["metrics"].items() >= {"path": "/metrics", "interval": "15s", "honorLabels": True}.items()
    # the job and pool labels the alert rules read, as the local scrape config sets them
    assert {"targetLabel": "job", "replacement": WORKERS_JOB} in endpoints["metrics"]["relabelings"]
    assert {"targetLabel": "job", "replacement": API_JOB} in endpoints["http"]["relabelings"]
    assert {"targetLabel": "job", "replacement": BEAT_JOB} in endpoints[beat_port["name"]]["relabelings"]
    pods = [o["spec"]["template"]["metadata"]["labels"] for _, o in OBJECTS if o["kind"] == "Deployment"]
    assert all(monitor["selector"]["matchLabels"].items() <= labels.items() for labels in pods)


def test_config_and_secret_name_only_real_settings_and_hold_no_secret() -> None:
    config = _find("ConfigMap", "fleet-config")["data"]
    assert set(config) <= SETTINGS_ENV, set(config) - SETTINGS_ENV
    secret = _find("Secret", "fleet-secrets")["stringData"]
    assert set(secret) <= SETTINGS_ENV, set(secret) - SETTINGS_ENV
    for _, obj in OBJECTS:
        for key, value in (obj.get("stringData") or {}).items():
            if re.search(r"PASSWORD|TOKEN|URL|BACKEND|host", key):
                assert "REPLACE-ME" in value, f"{key} must be a placeholder"
    committed = {path.name for path in (DEPLOY / "k8s").iterdir()}
    assert not any(name.endswith((".yaml", ".yml", ".json")) and "secret" in name for name in committed), (
        "the Secret template must not be applied by `kubectl apply -f deploy/k8s/`"
    )


# -- Dockerfile ----------------------------------------------------------------------------------------------------


def test_dockerfile_runs_fleet_as_non_root_in_exec_form_without_build_secrets() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] == str(VALUES.k8s.uid) != "0"
    for keyword in ("ENTRYPOINT", "CMD"):
        (line,) = [i for i in instructions if i.startswith(f"{keyword} ")]
        assert isinstance(json.loads(line.removeprefix(keyword)), list), f"{keyword} in exec form"
    assert json.loads(next(i for i in instructions if i.startswith("ENTRYPOINT ")).removeprefix("ENTRYPOINT")) == [
        "fleet"
    ]
    build_args = " ".join(i for i in instructions if i.startswith(("ARG ", "ENV ")))
    assert not re.search(r"PASSWORD|TOKEN|SECRET|BROKER_URL|KEY", build_args, re.I), build_args
    assert not any("--mount=type=secret" in i or ".env" in i.split() for i in instructions)


def test_dockerfile_states_the_values_uid_var_dir_and_ports() -> None:
    """The Dockerfile cannot import the values, so it is held to them here."""
    text = (ROOT / "Dockerfile").read_text()
    uid, var_dir = VALUES.k8s.uid, VALUES.k8s.var_dir
    assert f"USER {uid}:{uid}" in text and f"--uid {uid} --gid {uid}" in text and f"--gid {uid} fleet" in text
    assert f"FLEET_VAR_DIR={var_dir}" in text and f"WORKDIR {var_dir}" in text
    assert f"EXPOSE {VALUES.api_port} {VALUES.metrics_port}" in text


def test_the_image_build_context_makes_a_complete_fleet_wheel(tmp_path: Path) -> None:
    """The files the Dockerfile copies are enough to build fleet with every module and the `fleet` command."""
    context = tmp_path / "context"
    context.mkdir()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        *sources, destination = words[1:]
        for source in sources:
            target = context / destination / source if destination.endswith("/") else context / destination
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    wheels = tmp_path / "wheels"
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(context)]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("fleet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "fleet").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules | {"app.py", "queues.py", "routing.py"} <= names, sorted(modules - names)
    assert "fleet = fleet.cli:main" in entry_points


# -- Prometheus ----------------------------------------------------------------------------------------------------


def test_every_queue_has_an_slo_record_and_every_pool_an_absent_check() -> None:
    """A queue added to queues.py and a pool spec is watched like the others, with no rule file edit."""
    from fleet.deploy.alerts import alert_rules
    from queues import WORK_QUEUES

    groups = yaml.safe_load(alert_rules())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    slos = {rule["labels"]["queue"]: rule["expr"] for rule in rules if rule.get("record")}
    assert list(slos) == list(WORK_QUEUES)
    for spec in POOLS.values():
        assert all(slos[queue] == f"vector({spec.queue_wait_slo_s})" for queue in spec.queues)
    (absent,) = [rule["expr"] for rule in rules if rule.get("alert") == "FleetPoolAbsent"]
    assert re.findall(r'pool="([^"]+)"', absent) == list(POOLS)
