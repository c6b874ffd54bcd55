"""ceiling_raw_amqp: the physical limit of this broker on this machine, from Python.

Three figures per repeat: confirmed publishing alone (the queue fills), a
consumer draining that backlog, and both at once (end to end, the headline).
"""

from __future__ import annotations

from typing import Any

from bench import rawamqp
from bench.harness import Bench, median_of, repeat, say, summary

QUEUE = "bench.ceiling"


def run(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    publish_rates: list[float] = []
    drain_rates: list[float] = []
    with bench.vhost() as vhost:
        rawamqp.declare(vhost.url, QUEUE)
        rawamqp.publish_confirmed(vhost.url, QUEUE, sizes.warmup)
        rawamqp.declare(vhost.url, QUEUE)  # purge the warm-up

        def once(_: int) -> float:
            n = sizes.tasks
            start, end = rawamqp.publish_confirmed(vhost.url, QUEUE, n)
            publish_rates.append(n / (end - start))
            consumer = rawamqp.Consumer(vhost.url, QUEUE, n)
            consumer.go()
            first, last = consumer.result()
            drain_rates.append(n / (last - first))
            consumer = rawamqp.Consumer(vhost.url, QUEUE, n)
            consumer.go()
            start, _ = rawamqp.publish_confirmed(vhost.url, QUEUE, n)
            _, last = consumer.result()
            return n / (last - start)

        runs = repeat("ceiling_raw_amqp end to end", sizes.repeats, once)
    say(f"ceiling_raw_amqp: confirmed publish {median_of(publish_rates):,.0f}/s, drain {median_of(drain_rates):,.0f}/s")
    return summary(
        runs,
        publish_per_s=round(median_of(publish_rates), 1),
        drain_per_s=round(median_of(drain_rates), 1),
        window=rawamqp.WINDOW,
        prefetch=rawamqp.PREFETCH,
    )
