"""Celery apps for other brokers or settings inside one test session."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from celery import _state

from fleet.celery_app import FleetCelery, create_celery
from fleet.settings import load_settings


@contextmanager
def app_for(env: Mapping[str, str]) -> Iterator[FleetCelery]:
    """A fleet app built from ``env``; the previously current app is current again afterwards
    (``create_celery`` makes its app current, and shared tasks follow the current app)."""
    previous = _state.get_current_app()
    app = create_celery(load_settings(env))
    try:
        yield app
    finally:
        app.close()
        previous.set_current()
        previous.set_default()
