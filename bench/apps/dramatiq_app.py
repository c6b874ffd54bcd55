"""Dramatiq with its RabbitMQ broker and defaults: what `dramatiq` measures.

`dramatiq bench.apps.dramatiq_app` runs it: 2 processes x 8 threads, acks after
the actor ran, no publisher confirms (the broker's default).
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench import probe

broker = RabbitmqBroker(url=os.environ["BENCH_BROKER_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench")
def noop(sent_at: float, tag: str = "-") -> None:
    probe.record(sent_at, tag)
