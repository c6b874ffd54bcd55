"""Every setting fleet reads from the environment, read once and validated.

This module is the only reader of ``os.environ``. Everything else receives a
:class:`Settings` instance, so tests and tools can build one explicitly.
A bad value fails fast with a message naming the variable and what it expects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fleet.transport import broker_urls, normalize_broker_url

T = TypeVar("T")

DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672//"
POOL_ENV_PREFIX = "FLEET_POOL_"
#: prometheus-client's own variable for its multiprocess directory: fleet sets it for the worker's
#: pool children and for gunicorn's workers (fleet.metrics.setup, fleet.api.server), never reads it
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("expected a number above 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("expected a TCP port from 1 to 65535")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


#: What an API token may do: ``read`` every GET of the ops API and console, ``operate`` read and act
#: (replay, delete, pause, cancel), ``enqueue`` the enqueue routes (and the status of what it sent).
TOKEN_SCOPES = ("read", "operate", "enqueue")
#: The name actions taken with ``FLEET_API_TOKEN`` are logged under.
SINGLE_TOKEN_NAME = "api-token"


@dataclass(frozen=True)
class ApiToken:
    """One entry of ``FLEET_API_TOKENS``: its name (in the logs), its scope, its secret."""

    name: str
    scope: str
    token: str = field(repr=False)


def _tokens(raw: str) -> tuple[ApiToken, ...]:
    """``name:scope:token,...``; the token itself may contain colons, never commas."""
    tokens = []
    for entry in _csv(raw):
        name, scope, token = (part.strip() for part in (entry.split(":", 2) + ["", ""])[:3])
        if not name or not token:
            raise ValueError(f"entry {name or '?'!r}: expected name:scope:token")
        if scope not in TOKEN_SCOPES:
            raise ValueError(f"entry {name!r}: scope {scope!r} is not one of {', '.join(TOKEN_SCOPES)}")
        tokens.append(ApiToken(name, scope, token))
    names = [token.name for token in tokens]
    if len(set(names)) != len(names):
        raise ValueError("every token needs its own name (actions are logged by name)")
    return tuple(tokens)


def _env(name: str, default: str, parse: Callable[[str], T] = str) -> T:  # type: ignore[assignment]
    """Declare a field read from environment variable ``name``."""
    return field(default=None, metadata={"env": name, "default": default, "parse": parse})  # type: ignore[return-value]


@dataclass(frozen=True)
class Settings:
    """fleet's configuration. Build with :func:`load_settings`."""

    # Broker and results (Celery's own variable names, so Celery users feel at home).
    broker_url: str = _env("CELERY_BROKER_URL", DEFAULT_BROKER_URL, normalize_broker_url)
    result_backend: str = _env("CELERY_RESULT_BACKEND", "")
    result_expires: int = _env("FLEET_RESULT_EXPIRES", "86400", _positive_int)
    broker_ca_file: str = _env("FLEET_BROKER_CA_FILE", "")

    # Where the fleet keeps its state: results database, beat schedule, revokes, reports.
    var_dir: Path = _env("FLEET_VAR_DIR", str(ROOT / "var"), Path)
    env: str = _env("FLEET_ENV", "development", _choice("development", "production"))
    log_level: str = _env("FLEET_LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"))

    # Topology.
    queue_type: str = _env("FLEET_QUEUE_TYPE", "classic", _choice("classic", "quorum"))
    delivery_limit: int = _env("FLEET_DELIVERY_LIMIT", "5", _positive_int)
    # RabbitMQ's consumer_timeout (ms on the broker, seconds here): hard time limits must stay below it.
    broker_consumer_timeout: float = _env("FLEET_BROKER_CONSUMER_TIMEOUT", "1800", _positive_float)
    extra_task_modules: tuple[str, ...] = _env("FLEET_TASK_MODULES", "", _csv)
    task_events: bool = _env("FLEET_TASK_EVENTS", "0", _bool)

    # Outbound peers the tasks talk to.
    smtp_host: str = _env("FLEET_SMTP_HOST", "localhost")
    # 8025, not 25: the development SMTP sink (fleet dev smtp) listens here without root.
    smtp_port: int = _env("FLEET_SMTP_PORT", "8025", _port)
    smtp_user: str = _env("FLEET_SMTP_USER", "")
    smtp_password: str = _env("FLEET_SMTP_PASSWORD", "")
    smtp_starttls: bool = _env("FLEET_SMTP_STARTTLS", "0", _bool)
    smtp_timeout: float = _env("FLEET_SMTP_TIMEOUT", "10", _positive_float)
    mail_from: str = _env("FLEET_MAIL_FROM", "fleet@localhost")
    digest_recipients: tuple[str, ...] = _env("FLEET_DIGEST_RECIPIENTS", "", _csv)
    http_timeout: float = _env("FLEET_HTTP_TIMEOUT", "10", _positive_float)
    payment_gateway_url: str = _env("FLEET_PAYMENT_GATEWAY_URL", "http://localhost:8081/payments")
    sync_source_url: str = _env("FLEET_SYNC_SOURCE_URL", "")
    retry_backoff_base: float = _env("FLEET_RETRY_BACKOFF_BASE", "2", _positive_float)
    retry_backoff_max: float = _env("FLEET_RETRY_BACKOFF_MAX", "600", _positive_float)

    # Front end.
    api_token: str = _env("FLEET_API_TOKEN", "")
    api_tokens: tuple[ApiToken, ...] = _env("FLEET_API_TOKENS", "", _tokens)
    api_bind: str = _env("FLEET_API_BIND", "127.0.0.1:5000")
    api_workers: int = _env("FLEET_API_WORKERS", "2", _positive_int)
    api_max_body_bytes: int = _env("FLEET_API_MAX_BODY_BYTES", "1048576", _positive_int)
    publish_timeout: float = _env("FLEET_PUBLISH_TIMEOUT", "3", _positive_float)
    # gevent: each connection a greenlet, one OS thread per worker; gthread: FLEET_API_THREADS threads.
    api_worker_class: str = _env("FLEET_API_WORKER_CLASS", "gevent", _choice("gevent", "gthread"))
    api_threads: int = _env("FLEET_API_THREADS", "8", _positive_int)
    # Connections a worker serves at once (gunicorn's --worker-connections, 1000 by default): with gevent each
    # reads its body in full, so this bounds a worker's memory (FLEET_API_MAX_BODY_BYTES each).
    api_connections: int = _env("FLEET_API_CONNECTIONS", "64", _positive_int)
    # Threads per API worker process that share the requests' confirms (fleet.confirm_streams).
    api_confirm_streams: int = _env("FLEET_API_CONFIRM_STREAMS", "2", _positive_int)
    # gunicorn's access log costs about 7% of an enqueue's CPU; /metrics counts every request anyway.
    api_access_log: bool = _env("FLEET_API_ACCESS_LOG", "0", _bool)
    api_max_batch: int = _env("FLEET_API_MAX_BATCH", "1000", _positive_int)
    # countdown/eta cap for API clients: workers remember a revoke for 3 hours (Celery's
    # REVOKE_EXPIRES), so a task due later could no longer be cancelled reliably.
    api_max_delay: float = _env("FLEET_API_MAX_DELAY", "10800", _positive_float)
    api_inspect_timeout: float = _env("FLEET_API_INSPECT_TIMEOUT", "1", _positive_float)
    api_metrics_dir: str = _env("FLEET_API_METRICS_DIR", "")

    #: ``FLEET_POOL_<POOL>_<FIELD>`` variables with the prefix removed, e.g.
    #: ``{"EMAIL_CONCURRENCY": "32"}``; :mod:`fleet.pools` interprets them.
    pool_env: Mapping[str, str] = field(default_factory=dict)

    # Observability.
    metrics_port: int = _env("FLEET_METRICS_PORT", "9808", _port)
    metrics_addr: str = _env("FLEET_METRICS_ADDR", "0.0.0.0")
    #: Off only to measure what metrics cost (the bench's metrics_overhead scenario).
    metrics_enabled: bool = _env("FLEET_METRICS_ENABLED", "1", _bool)
    #: Parent of each worker's prometheus-client multiprocess directory (default: var/metrics).
    metrics_dir_base: str = _env("FLEET_METRICS_DIR", "")

    @property
    def results_url(self) -> str:
        """The result backend URL, defaulting to a SQLite file under ``var_dir``."""
        return self.result_backend or f"db+sqlite:///{self.var_dir / 'results.sqlite'}"

    @property
    def reports_dir(self) -> Path:
        return self.var_dir / "reports"

    @property
    def data_dir(self) -> Path:
        return self.var_dir / "data"

    @property
    def metrics_dir(self) -> Path:
        """Where each worker keeps its multiprocess metric files, one subdirectory per node."""
        return Path(self.metrics_dir_base) if self.metrics_dir_base else self.var_dir / "metrics"

    @property
    def api_metrics_path(self) -> Path:
        """Where the API's gunicorn workers keep prometheus-client multiprocess files."""
        return Path(self.api_metrics_dir) if self.api_metrics_dir else self.metrics_dir / "api"

    @property
    def all_tokens(self) -> tuple[ApiToken, ...]:
        """``FLEET_API_TOKENS``, and ``FLEET_API_TOKEN`` once per scope (it may do everything)."""
        single = tuple(ApiToken(SINGLE_TOKEN_NAME, scope, self.api_token) for scope in TOKEN_SCOPES)
        return self.api_tokens + (single if self.api_token else ())

    @property
    def is_production(self) -> bool:
        return self.env == "production"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every setting from ``environ`` (default ``os.environ``), validating each.

    ``overrides`` replace parsed values by field name; tests use them instead of
    mutating the process environment.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    errors: list[str] = []
    for f in fields(Settings):
        meta = f.metadata
        if "env" not in meta:
            continue
        raw = environ.get(meta["env"], meta["default"])
        try:
            values[f.name] = meta["parse"](raw)
        except ValueError as exc:
            errors.append(f"{meta['env']}={raw!r}: {exc}")
    if errors:
        raise SettingsError("invalid fleet settings:\n  " + "\n  ".join(errors))
    values["pool_env"] = {
        key.removeprefix(POOL_ENV_PREFIX): value for key, value in environ.items() if key.startswith(POOL_ENV_PREFIX)
    }
    values.update(overrides)
    settings = Settings(**values)
    _check_production(settings)
    return settings


def _check_production(settings: Settings) -> None:
    """Production refuses the two classic footguns: no API token and guest credentials."""
    if not settings.is_production:
        return
    problems = []
    if not settings.all_tokens:
        problems.append("FLEET_API_TOKENS or FLEET_API_TOKEN must be set when FLEET_ENV=production")
    if any(urlsplit(url).username in (None, "", "guest") for url in broker_urls(settings.broker_url)):
        problems.append("CELERY_BROKER_URL must not use RabbitMQ's guest account when FLEET_ENV=production")
    if problems:
        raise SettingsError("refusing to start:\n  " + "\n  ".join(problems))
