"""A short-interval periodic entry for the beat tests, added the way a team adds its own:
a module in FLEET_TASK_MODULES calling Celery's ``add_periodic_task``."""

from __future__ import annotations

from celery import current_app

TICK_NAME = "tests.tick"
TICK_SECONDS = 3.0
#: the message's absolute ``expires`` header minus this is when beat sent it
TICK_EXPIRES = 600

current_app.add_periodic_task(
    TICK_SECONDS, current_app.signature("tests.sleep", args=(0,)), name=TICK_NAME, expires=TICK_EXPIRES
)
