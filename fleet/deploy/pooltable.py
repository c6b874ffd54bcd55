"""The pool table people read, in the terminal (``fleet pools``) and in the README, from the specs.

The README's table sits between :data:`START` and :data:`END` and is written by
``fleet pools --write-readme`` (``make render``); a test fails when it differs from the specs, so
the README cannot claim a limit or a recycling rule that the pools do not have.
"""

from __future__ import annotations

from pathlib import Path

from fleet.pools import POOLS, PoolSpec

START = "<!-- pools:table:start (written by `fleet pools --write-readme` from fleet/pools.py; do not edit) -->"
END = "<!-- pools:table:end -->"
HEADER = ("pool", "kind", "concurrency", "prefetch", "soft / hard limit", "child recycled", "replicas", "nice", "why")


def limits(spec: PoolSpec) -> str:
    """Time limits: prefork's from Celery, a thread pool's from fleet.worker.limits."""
    return f"{spec.soft_time_limit} / {spec.time_limit} s"


def recycling(spec: PoolSpec) -> str:
    rules = []
    if spec.max_tasks_per_child:
        rules.append(f"every {spec.max_tasks_per_child} tasks")
    if spec.max_memory_per_child_kb:
        rules.append(f"past {spec.max_memory_per_child_kb // 1000} MB")
    return " or ".join(rules) or "never"


def rows() -> list[tuple[str, ...]]:
    return [
        (
            spec.name,
            spec.pool,
            str(spec.concurrency),
            str(spec.prefetch_multiplier),
            limits(spec),
            recycling(spec),
            str(spec.replicas),
            str(spec.nice),
            spec.rationale,
        )
        for spec in POOLS.values()
    ]


def text_table() -> str:
    """Aligned columns for the terminal; the last (why) column runs on."""
    table = [HEADER, *rows()]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in table
    )


def markdown_table() -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join((f"`{row[0]}`", *row[1:])) + " |" for row in rows()]
    return "\n".join(lines)


def with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by a fresh table."""
    head, found, rest = readme.partition(START)
    if not found:
        raise ValueError(f"the README has no {START!r} marker")
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError(f"the README has no {END!r} marker")
    return f"{head}{START}\n{markdown_table()}\n{END}{tail}"


def write_readme(path: Path) -> bool:
    """Rewrite the table in ``path``; True when it changed."""
    old = path.read_text()
    new = with_table(old)
    if new != old:
        path.write_text(new)
    return new != old
