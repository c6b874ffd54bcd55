"""latest.png: the run's rates and latencies as two bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from bench.report import ROWS, _get  # noqa: E402


def draw(document: dict[str, Any], path: Path) -> None:
    results = document["scenarios"]
    rates, latencies = [], []
    for scenario, label, key, unit in ROWS:
        value = _get(results.get(scenario) or {}, key)
        if value is None:
            continue
        if unit.strip() in ("/s", "ms"):  # rates and latencies; CPU times are in the table only
            (latencies if unit.strip() == "ms" else rates).append((label.replace(" / p99", ""), value))
    if "api_enqueue" in results:
        p99 = _get(results["api_enqueue"], "p99_ms")
        if p99 is not None:
            latencies.append(("fleet API p99", p99))
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 9), gridspec_kw={"height_ratios": [max(len(rates), 1), max(len(latencies), 1)]}
    )
    _bars(top, rates, "per second (higher is better)", "tab:blue")
    _bars(bottom, latencies, "milliseconds (lower is better)", "tab:orange")
    facts = document["machine"]
    figure.suptitle(
        f"fleet bench, {facts['when']} ({facts['run']}), {facts['cores']} cores, "
        f"RabbitMQ {facts['rabbitmq'].get('version')}, load {facts['load_average_end']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _bars(axes: Any, rows: list[tuple[str, float]], xlabel: str, color: str) -> None:
    labels = [label for label, _ in rows][::-1]
    values = [value for _, value in rows][::-1]
    axes.barh(labels, values, color=color)
    for y, value in enumerate(values):
        axes.text(value, y, f" {value:,.0f}" if value >= 100 else f" {value:.1f}", va="center", fontsize=8)
    axes.set_xlabel(xlabel)
    axes.tick_params(axis="y", labelsize=8)
    axes.margins(x=0.15)
