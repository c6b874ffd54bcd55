"""Raw py-amqp: the fastest this broker moves persistent, confirmed, acked messages from Python.

No Celery, no kombu: a publisher with a window of in-flight publisher confirms,
and a consumer process acking every message. Messages are shaped like Celery's
(same headers and body size), so the ceiling is the ceiling for task messages.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp

from bench.message import task_like
from fleet.publish import Confirms

WINDOW = 1000  # confirms in flight before the publisher waits
PREFETCH = 1000


def connect(url: str) -> amqp.Connection:
    parts = urlsplit(url)
    connection = amqp.Connection(
        host=f"{parts.hostname}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path[1:]) or "/",
    )
    connection.connect()
    return connection


def task_like_message(sent_at: float) -> amqp.Message:
    """A persistent message with Celery's headers and body for ``bench.noop(sent_at)``."""
    body, headers, task_id = task_like(sent_at)
    return amqp.Message(
        body,
        delivery_mode=2,
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=headers,
        correlation_id=task_id,
    )


def declare(url: str, queue: str) -> None:
    connection = connect(url)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, auto_delete=False)
    channel.queue_purge(queue)
    connection.close()


def publish_confirmed(url: str, queue: str, count: int, window: int = WINDOW) -> tuple[float, float]:
    """Publish ``count`` messages with at most ``window`` unconfirmed; (start, all confirmed) wall clock."""
    connection = connect(url)
    channel = connection.channel()
    channel.confirm_select()
    publish = channel._basic_publish  # the plain publish; confirm mode swaps in one that waits per message
    confirms = Confirms()
    channel.events["basic_ack"].add(confirms.on_ack)
    channel.events["basic_nack"].add(confirms.on_nack)
    start = time.time()
    for _ in range(count):
        publish(task_like_message(time.time()), exchange="", routing_key=queue)
        confirms.published += 1
        while confirms.published - (confirms.acked_below - 1) - len(confirms.acked) >= window:
            connection.drain_events(timeout=30)
    while not confirms.done:
        connection.drain_events(timeout=30)
    end = time.time()
    connection.close()
    if confirms.nacked:
        raise RuntimeError(f"RabbitMQ nacked {confirms.nacked} messages")
    return start, end


def _consume(url: str, queue: str, count: int, ready: Any, go: Any, out: Any) -> None:
    connection = connect(url)
    channel = connection.channel()
    channel.basic_qos(0, PREFETCH, False)
    state = {"taken": 0, "last": 0.0}

    def on_message(message: amqp.Message) -> None:
        channel.basic_ack(message.delivery_tag)
        state["taken"] += 1
        state["last"] = time.time()

    ready.set()
    go.wait()
    start = time.time()
    channel.basic_consume(queue, callback=on_message)
    while state["taken"] < count:
        connection.drain_events(timeout=60)
    out.send((start, state["last"]))
    connection.close()


class Consumer:
    """A consumer process acking every message; ``go()`` starts it, ``result()`` is (start, last ack)."""

    def __init__(self, url: str, queue: str, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self.ready, self.go_event = context.Event(), context.Event()
        self.receive, send = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_consume, args=(url, queue, count, self.ready, self.go_event, send), daemon=True
        )
        self.process.start()
        if not self.ready.wait(30):
            raise RuntimeError("the raw consumer did not connect within 30 s")

    def go(self) -> None:
        self.go_event.set()

    def result(self, timeout: float = 180) -> tuple[float, float]:
        if not self.receive.poll(timeout):
            self.process.kill()
            raise TimeoutError("the raw consumer did not finish in time")
        start, last = self.receive.recv()
        self.process.join(10)
        return start, last
