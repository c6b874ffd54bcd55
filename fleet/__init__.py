"""fleet: a RabbitMQ-based, multi-queue Celery worker fleet.

``celery -A fleet`` finds :data:`app` here. It is built lazily from the
environment on first access, so importing ``fleet`` has no side effects.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.celery_app import FleetCelery

__all__ = ["app", "default_app"]


@cache
def default_app() -> FleetCelery:
    """The Celery app built from the process environment (once per process)."""
    from fleet.celery_app import create_celery

    return create_celery()


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return default_app()
    raise AttributeError(f"module 'fleet' has no attribute {name!r}")
