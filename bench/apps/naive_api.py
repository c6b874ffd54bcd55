"""The naive enqueue endpoint of the Celery + Flask guide, run under gunicorn like fleet's API.

One ``delay()`` per request with Celery's defaults (no publisher confirms): the
answer says nothing about whether RabbitMQ has the message. With ``confirmed``,
the same endpoint as a team would make it safe with Celery alone: py-amqp's
publisher confirms (``broker_transport_options={"confirm_publish": True}``), so
``delay()`` returns only once RabbitMQ acked, as fleet's 202 does.
"""

from __future__ import annotations

import time

from flask import Flask, request

from bench.apps.plain_celery import app as celery_app
from bench.apps.plain_celery import noop


def create_app(confirmed: bool = False) -> Flask:
    if confirmed:
        celery_app.conf.broker_transport_options = {"confirm_publish": True}
    app = Flask(__name__)
    app.extensions["celery"] = celery_app

    @app.post("/tasks")
    def enqueue():  # noqa: ANN202 - Flask view
        payload = request.get_json(silent=True) or {}
        result = noop.delay(float(payload.get("sent_at", time.time())))
        return {"result_id": result.id}, 202

    return app
