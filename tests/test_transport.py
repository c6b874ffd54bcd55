"""fleet speaks AMQP through py-amqp only: an importable librabbitmq never takes over,
and a librabbitmq:// broker URL is refused at start with the reason and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.settings import SettingsError, load_settings
from fleet.testing.broker import Vhost, drain
from fleet.testing.processes import FLEET
from fleet.transport import normalize_broker_url

#: importable, so kombu would pick it for amqp:// URLs; any real use fails loudly
STAND_IN = '''
"""Stand-in librabbitmq: importable, unusable."""
__version__ = "0.0.0-stand-in"


class ChannelError(Exception):
    pass


class ConnectionError(Exception):
    pass


class Connection:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("the stand-in librabbitmq was used")


class Channel(Connection):
    pass
'''

#: runs in a subprocess with the stand-in first on sys.path, prints what it saw as JSON
PROBE = textwrap.dedent(
    """
    import json, sys
    from kombu import Connection
    from fleet.celery_app import create_celery
    from fleet.publish import publish_many
    from fleet.settings import load_settings

    url = sys.argv[1]
    plain = Connection(url)  # what any kombu user gets for amqp://
    app = create_celery(load_settings())
    seen = {"plain_kombu": plain.transport_cls, "plain_transport": type(plain.transport).__module__}
    for role, connection in (("write", app.connection_for_write()), ("read", app.connection_for_read())):
        with connection:
            connection.ensure_connection(max_retries=1)
            seen[role] = f"{type(connection.transport).__module__}.{type(connection.transport).__name__}"
    seen["confirmed_ids"] = len(publish_many(app, [("tasks.process_data", (1,), {})] * 3))
    import librabbitmq
    seen["stand_in_importable"] = librabbitmq.__version__
    print(json.dumps(seen))
    """
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLEET_", "CELERY_"))}
    env.update(extra)
    return env


@pytest.fixture
def own_vhost() -> Iterator[Vhost]:
    """A vhost no session worker consumes from, so the published messages stay put."""
    vhost = Vhost().create()
    yield vhost
    vhost.delete()


def test_an_importable_librabbitmq_does_not_take_over_fleet_connections(own_vhost: Vhost, tmp_path: Path) -> None:
    vhost = own_vhost
    (tmp_path / "librabbitmq.py").write_text(STAND_IN)
    root = Path(__file__).resolve().parent.parent
    env = _clean_env(
        CELERY_BROKER_URL=vhost.url,
        FLEET_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(root)]),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, vhost.url], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # The stand-in is live: plain kombu swaps amqp:// for it, as kombu does with the real one...
    assert seen["stand_in_importable"] == "0.0.0-stand-in"
    assert seen["plain_kombu"] == "librabbitmq"
    assert seen["plain_transport"] == "kombu.transport.librabbitmq"
    # ...but every fleet connection stays on py-amqp and really talks to RabbitMQ.
    assert seen["write"] == "fleet.read_ahead.FleetAMQPTransport"  # kombu's pyamqp transport, reading ahead
    assert seen["read"] == "fleet.read_ahead.FleetAMQPTransport"
    assert seen["confirmed_ids"] == 3
    assert len(drain(vhost.url, "default")) == 3


@pytest.mark.pure
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@localhost:5672//", "pyamqp://guest:guest@localhost:5672//"),
        ("pyamqp://u:p@host:5672/vh", "pyamqp://u:p@host:5672/vh"),
        ("amqps://u:p@host:5671/vh", "amqps://u:p@host:5671/vh"),
        # a failover list: kombu re-parses each alternate's scheme when it fails over
        ("amqp://a:5672//;amqp://b:5672//; amqp://c:5672//", "pyamqp://a:5672//;pyamqp://b:5672//;pyamqp://c:5672//"),
    ],
)
def test_amqp_urls_are_pinned_to_py_amqp(url: str, expected: str) -> None:
    assert normalize_broker_url(url) == expected
    assert load_settings({"CELERY_BROKER_URL": url}).broker_url == expected


@pytest.mark.pure
def test_every_url_of_a_failover_list_reaches_py_amqp_on_failover() -> None:
    from kombu import Connection

    connection = Connection(normalize_broker_url("amqp://127.0.0.1:1//;amqp://127.0.0.1:2//"))
    connection.maybe_switch_next()  # what kombu does when the first URL fails
    assert connection.transport_cls == "pyamqp"


@pytest.mark.pure
def test_a_librabbitmq_url_anywhere_in_a_failover_list_is_refused() -> None:
    with pytest.raises(SettingsError, match="publisher confirms"):
        load_settings({"CELERY_BROKER_URL": "amqp://a//;librabbitmq://b//"})


@pytest.mark.pure
def test_librabbitmq_url_is_refused_with_the_reason_and_the_fix() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"CELERY_BROKER_URL": "librabbitmq://guest:guest@localhost:5672//"})
    message = str(refused.value)
    assert "CELERY_BROKER_URL" in message
    assert "publisher confirms" in message
    assert "Celery 5.7 workers crash" in message
    assert "Use amqp://" in message


@pytest.mark.pure
def test_fleet_worker_refuses_to_start_on_librabbitmq(tmp_path: Path) -> None:
    env = _clean_env(CELERY_BROKER_URL="librabbitmq://guest:guest@127.0.0.1:5672//", FLEET_VAR_DIR=str(tmp_path))
    done = subprocess.run(
        [FLEET, "worker", "default"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "librabbitmq://, which fleet refuses" in done.stderr
    assert "no publisher confirms" in done.stderr
    assert "Use amqp://" in done.stderr
    assert "ready." not in done.stdout + done.stderr
