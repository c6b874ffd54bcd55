"""The thin Flask front end: validate, publish with confirm, answer 202.

``create_app`` is the factory (``gunicorn 'app:create_app()'``, see ``fleet
api``). Workers build the same app so tasks run inside its application context.
The endpoints live in :mod:`fleet.api`.

Wiring goes one way: this module builds on :mod:`fleet.celery_app`, which never
imports it; a worker's Celery app reaches this factory by its name
(``FleetCelery.flask_factory``), as Celery reaches its Request and consumer classes.
"""

from __future__ import annotations

from flask import Flask

from fleet import console
from fleet.api import BLUEPRINTS, install
from fleet.celery_app import FleetCelery, create_celery
from fleet.settings import Settings, load_settings


def create_app(settings: Settings | None = None, celery: FleetCelery | None = None) -> Flask:
    """Build the front end on ``celery``, or on a Celery app built from ``settings`` (the API's case).

    Workers pass the app they run (``FleetCelery.flask_app``).
    """
    settings = settings or load_settings()
    celery = celery or create_celery(settings)
    app = Flask("fleet", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.api_max_body_bytes
    app.json.sort_keys = False
    install(app, settings, celery)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.register_blueprint(console.bp)  # HTML pages over the ops API's functions, not part of the OpenAPI document
    return app
