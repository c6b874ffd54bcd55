"""``deploy/supervisor``: the API, one program per pool and one beat under supervisord.

Nothing here reads the environment: the file takes its paths from ``%(ENV_...)s`` at run time,
so the same file serves a checkout and ``/opt/fleet``.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleet.deploy.files import GENERATED
from fleet.deploy.supervisor_auth import CTL_FILE, SOCKET_FILE
from fleet.deploy.values import VALUES
from fleet.pools import POOLS, PoolSpec, beat_metrics_port, metrics_port
from fleet.settings import Settings

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

_AUTH_PATH = f"%(ENV_FLEET_VAR_DIR)s/{CTL_FILE}"


def stop_wait(spec: PoolSpec) -> int:
    """Seconds a stopping worker gets: its soft-shutdown timeout plus the margin (fleet.worker.shutdown)."""
    return spec.soft_shutdown_timeout + VALUES.stop_margin_s


def _section(name: str, options: Iterable[tuple[str, object]], comments: Iterable[str] = ()) -> str:
    lines = [f"[{name}]", *(f"; {c.replace('%', '%%')}" for c in comments)]
    lines += [f"{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in options]
    return "\n".join(lines)


def _program(command: str, stopwaitsecs: int, numprocs: int = 1) -> list[tuple[str, object]]:
    """The options every fleet program shares: TERM to the parent only, KILL to the group late."""
    log = "%(ENV_FLEET_VAR_DIR)s/log/%(program_name)s-%(process_num)d.log"
    return [
        ("command", f"%(ENV_FLEET_HOME)s/.venv/bin/fleet {command}"),
        ("process_name", "%(program_name)s-%(process_num)d"),
        ("numprocs", numprocs),
        ("directory", "%(ENV_FLEET_HOME)s"),
        ("autostart", True),
        ("autorestart", True),
        ("startsecs", VALUES.supervisor.startsecs),
        ("startretries", VALUES.supervisor.startretries),
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
    sections = [
        "; " + GENERATED.format(target="supervisor"),
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
        _section("program:api", _program("api", VALUES.api.stop_wait_s), ["gunicorn on FLEET_API_BIND"]),
        _section(
            "program:beat",
            _program("beat", VALUES.beat.stop_wait_s),
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
        "; " + GENERATED.format(target="supervisor"),
        f"; Development only (`make run` with FLEET_ENV=development): {SUPERVISOR_FILE} plus loopback\n"
        "; stand-ins for the peers the demo tasks talk to. Production runs fleet.conf, which has none.",
        # supervisord reads one level of includes, so the credentials are included here too
        _section("include", [("files", f"{SUPERVISOR_FILE} {_AUTH_PATH}")]),
        # Below the default 999: the stand-ins start before the workers and stop after them, so a
        # task finishing during a warm shutdown can still reach them.
        _section("group:dev", [("programs", ",".join(DEV_PEERS)), ("priority", VALUES.supervisor.dev_priority)]),
    ]
    for name, (command, what) in DEV_PEERS.items():
        sections.append(_section(f"program:{name}", _program(command, VALUES.supervisor.dev_stopwaitsecs), [what]))
    return "\n\n".join(sections) + "\n"


def banner(settings: Settings) -> str:
    """What ``make run`` prints before starting: where the API and every worker's metrics are."""
    api = f"http://{settings.api_bind.replace('0.0.0.0', '127.0.0.1')}"
    login = "log in with a read or operate token" if settings.all_tokens else "open: no API token is set"
    lines = [f"fleet API:     {api}   (health: {api}/healthz)", f"console:       {api}/console   ({login})"]
    lines.append("worker metrics:")
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
