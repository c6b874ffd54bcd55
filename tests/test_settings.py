"""Settings: read once, validated, clear errors (pure logic, no services)."""

from __future__ import annotations

import pytest

from fleet.pools import POOLS, PoolError
from fleet.settings import SettingsError, load_settings
from fleet.worker.run import resolve_pool, worker_argv

pytestmark = pytest.mark.pure  # the fast tier: no service needed


def test_defaults_need_nothing_but_rabbitmq(tmp_path) -> None:
    settings = load_settings({"FLEET_VAR_DIR": str(tmp_path)})
    assert settings.broker_url == "pyamqp://guest:guest@localhost:5672//"
    assert settings.results_url == f"db+sqlite:///{tmp_path / 'results.sqlite'}"
    assert settings.queue_type == "classic"


def test_every_bad_value_is_named_with_what_it_expects() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"FLEET_SMTP_PORT": "smtp", "FLEET_QUEUE_TYPE": "fancy", "FLEET_TASK_EVENTS": "maybe"})
    message = str(caught.value)
    assert "FLEET_SMTP_PORT='smtp'" in message
    assert "FLEET_QUEUE_TYPE='fancy': expected one of classic, quorum" in message
    assert "FLEET_TASK_EVENTS='maybe'" in message


def test_production_refuses_guest_and_a_missing_token() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"FLEET_ENV": "production"})
    assert "FLEET_API_TOKEN must be set" in str(caught.value)
    assert "guest account" in str(caught.value)
    settings = load_settings(
        {"FLEET_ENV": "production", "FLEET_API_TOKEN": "t0ken", "CELERY_BROKER_URL": "amqps://svc:pw@mq:5671/prod"}
    )
    assert settings.is_production


def test_pool_overrides_from_env_then_flags() -> None:
    settings = load_settings({"FLEET_POOL_EMAIL_CONCURRENCY": "32", "FLEET_POOL_HIGH_PRIORITY_REPLICAS": "3"})
    assert resolve_pool("email", settings).concurrency == 32
    assert resolve_pool("high_priority", settings).replicas == 3
    assert resolve_pool("email", settings, {"concurrency": "8"}).concurrency == 8
    with pytest.raises(PoolError, match="concurrency must be a whole number"):
        resolve_pool("email", settings, {"concurrency": "many"})
    with pytest.raises(PoolError, match="unknown pool"):
        resolve_pool("nope", settings)


def test_nice_overrides_keep_zero_and_stay_in_linux_range() -> None:
    settings = load_settings({"FLEET_POOL_DEFAULT_NICE": "0", "FLEET_POOL_EMAIL_NICE": "19"})
    assert POOLS["default"].nice > 0, "the bulk pools yield to high_priority by default"
    assert resolve_pool("default", settings).nice == 0, "0 is a niceness, not 'off'"
    assert resolve_pool("email", settings).nice == 19
    for bad in ("20", "-5"):
        with pytest.raises(PoolError, match="nice"):
            resolve_pool("reports", settings, {"nice": bad})


def test_hard_time_limit_must_stay_below_the_consumer_timeout() -> None:
    settings = load_settings({"FLEET_BROKER_CONSUMER_TIMEOUT": "60"})
    with pytest.raises(PoolError, match="consumer_timeout"):
        resolve_pool("reports", settings)  # 600 s hard limit
    assert resolve_pool("high_priority", settings).time_limit == 30


def test_worker_argv_is_the_spec() -> None:
    settings = load_settings({})
    spec = POOLS["reports"]
    argv = worker_argv(spec, "reports@host", settings)
    assert "--queues=reports" in argv
    assert "--pool=prefork" in argv
    assert "--concurrency=1" in argv
    assert "--prefetch-multiplier=1" in argv
    assert "--max-memory-per-child=512000" in argv
    assert "--time-limit=600" in argv


def test_every_setting_is_documented_in_the_readme() -> None:
    from dataclasses import fields
    from pathlib import Path

    from fleet.settings import Settings

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [f.metadata["env"] for f in fields(Settings) if "env" in f.metadata and f.metadata["env"] not in readme]
    assert not missing, f"settings missing from README.md: {missing}"
