"""The thin Flask front end: validate, publish with confirm, answer 202.

``create_app`` is the factory (``gunicorn 'app:create_app()'``, see ``fleet
api``). Workers build the same app so tasks run inside its application context.
The endpoints live in :mod:`fleet.api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from fleet.api import BLUEPRINTS, install
from fleet.settings import Settings, load_settings

if TYPE_CHECKING:
    from fleet.celery_app import FleetCelery


def create_app(settings: Settings | None = None, celery: FleetCelery | None = None) -> Flask:
    """Build the front end. ``celery`` is passed by workers that already have one."""
    settings = settings or load_settings()
    if celery is None:
        from fleet.celery_app import create_celery

        celery = create_celery(settings)
    app = Flask("fleet", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.api_max_body_bytes
    app.json.sort_keys = False
    app.extensions["fleet.settings"] = settings
    app.extensions["celery"] = celery
    install(app, settings, celery)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
