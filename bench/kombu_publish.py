"""Raw publish rate through kombu on one transport; prints one JSON line.

Run with any interpreter that has kombu, so the same code measures py-amqp in
fleet's .venv and librabbitmq in bench/.venv-librabbitmq:

    python -m bench.kombu_publish URL QUEUE --transport pyamqp --mode unconfirmed --count 10000

Each repeat ends when passive queue declares show every message in the queue,
so "unconfirmed" counts messages RabbitMQ has queued, not bytes left in a
socket buffer.
"""

from __future__ import annotations

import argparse
import json
import time

from kombu import Connection, Producer

from bench.message import task_like


def measure(url: str, queue: str, transport: str, confirmed: bool, count: int, repeats: int) -> dict:
    url = f"{transport}://{url.split('://', 1)[1]}"
    options = {"confirm_publish": True} if confirmed else {}
    with Connection(url, transport_options=options) as connection:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True, auto_delete=False)
        producer = Producer(channel, routing_key=queue, auto_declare=False)

        def once(n: int) -> float:
            channel.queue_purge(queue)
            start = time.perf_counter()
            for _ in range(n):
                body, headers, _id = task_like(time.time())
                producer.publish(
                    body,
                    headers=headers,
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                )
            deadline = time.monotonic() + 60
            while (depth := channel.queue_declare(queue=queue, passive=True)[1]) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{n} published, {depth} in the queue after 60 s")
            return n / (time.perf_counter() - start)

        once(min(count, 1000))  # warm-up
        runs = [once(count) for _ in range(repeats)]
        channel.queue_purge(queue)
        used = f"{type(connection.transport).__module__}.{type(connection.transport).__name__}"
    return {"runs": runs, "transport": used}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("--transport", choices=("pyamqp", "librabbitmq"), required=True)
    parser.add_argument("--mode", choices=("unconfirmed", "confirmed"), required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.url, args.queue, args.transport, args.mode == "confirmed", args.count, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
