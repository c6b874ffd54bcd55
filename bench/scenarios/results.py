"""results: tasks that store their result, fleet against plain Celery defaults on the same backend.

Two backends: SQLite (fleet's default, a file under FLEET_VAR_DIR in WAL mode)
and Redis at 127.0.0.1:6379. For each, `fleet worker default` (production
settings, which also record STARTED) and a plain Celery worker with nothing but
a broker URL and the same kind of backend run side by side in their own vhosts,
and their repeats alternate, so a drifting machine hits both alike. A run is
end to end: from the first publish until the backend holds every run's SUCCESS
(read from the backend itself, bench.backends). fleet publishes through
``publish_many``, plain Celery one ``apply_async`` at a time from an app without
a backend (publishing is then the same as in celery_defaults).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.backends import Results
from bench.harness import Bench, median_of, say, summary
from bench.probe import Probe
from bench.scenarios.fleet import fleet_publisher, fleet_side
from bench.workload import load_peer

#: backend -> the URL both workers are given (None: fleet's default, a SQLite file each)
BACKENDS: dict[str, str | None] = {"sqlite": None, "redis": "redis://127.0.0.1:6379/0"}
SIDES = ("fleet", "celery_defaults")


@dataclass
class Side:
    probe: Probe
    results: Results
    publish: Callable[[int], list[str]]
    published: list[str]

    def once(self, bench: Bench, n: int) -> float:
        """Publish ``n``; tasks/s until the backend holds all ``n`` results as SUCCESS."""
        self.probe.reset()
        start = time.time()
        ids = self.publish(n)
        self.published += ids
        self.probe.wait(n, timeout=bench.sizes.timeout, alive=bench.alive)
        pending, deadline = set(ids), time.monotonic() + bench.sizes.timeout
        while pending:
            pending -= self.results.succeeded(pending)
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} of {n} results not stored in time")
                time.sleep(0.01)
        return n / (time.time() - start)


def run(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend, url in BACKENDS.items():
        try:
            out[backend] = compare(bench, backend, url)
        except Exception as exc:  # noqa: BLE001 - one backend failing must not hide the other's figures
            traceback.print_exc()
            out[backend] = {"status": "failed", "error": repr(exc)}
        finally:
            bench.stop_all()
    if all(part.get("status") == "failed" for part in out.values()):
        return {"status": "failed", "error": "; ".join(part["error"] for part in out.values()), **out}
    return out


def compare(bench: Bench, backend: str, url: str | None) -> dict[str, Any]:
    n = bench.sizes.result_tasks
    fleet_env = {"CELERY_RESULT_BACKEND": url} if url else {}
    with fleet_side(bench, f"results-{backend}-fleet", fleet_env) as fleet, bench.vhost() as vhost:
        plain_url = url or f"db+sqlite:///{bench.work / f'results-{backend}-plain.sqlite'}"
        plain_probe = bench.probe(f"results-{backend}-plain")
        plain_env = bench.env(vhost, plain_probe, BENCH_RESULT_BACKEND=plain_url)
        peer = load_peer("bench.apps.plain_celery", vhost.url)
        fleet.start(bench, f"results-{backend}-fleet")
        bench.start(f"results-{backend}-plain", ["celery", "-A", "bench.apps.plain_celery", "worker"], plain_env)
        publish_fleet = fleet_publisher(fleet.app, task="bench.store")
        sides = {
            "fleet": Side(fleet.probe, Results(fleet.app.fleet_settings.results_url), publish_fleet, []),
            "celery_defaults": Side(
                plain_probe,
                Results(plain_url),
                lambda k: [peer.store.apply_async((time.time(),)).id for _ in range(k)],
                [],
            ),
        }
        runs: dict[str, list[float]] = {name: [] for name in SIDES}
        try:
            for side in sides.values():  # warm-up: also how we know each worker consumes and stores
                side.once(bench, min(bench.sizes.warmup, max(1, n // 5)))

            for i in range(bench.sizes.repeats):
                for name in SIDES if i % 2 == 0 else SIDES[::-1]:
                    runs[name].append(sides[name].once(bench, n))
                say(f"results {backend}: repeat {i + 1}/{bench.sizes.repeats}: fleet {runs['fleet'][-1]:,.0f}/s, "
                    f"celery_defaults {runs['celery_defaults'][-1]:,.0f}/s")  # fmt: skip
        finally:
            for side in sides.values():
                side.results.forget(side.published)
                side.results.close()
            peer.app.close()
    fleet_rate, plain_rate = median_of(runs["fleet"]), median_of(runs["celery_defaults"])
    say(f"results {backend}: fleet {fleet_rate:,.0f}/s, celery_defaults {plain_rate:,.0f}/s")
    return {
        "fleet": summary(runs["fleet"]),
        "celery_defaults": summary(runs["celery_defaults"]),
        "ratio": round(fleet_rate / plain_rate, 3),
        "backend": url or "db+sqlite (a file per worker side)",
    }
