"""CSV import: a file under the var directory read in chunks, with PROGRESS and per-row errors."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from fleet.progress import PROGRESS
from fleet.settings import Settings

DEFAULT_CHUNK = 100
OPTIONS = frozenset({"chunk_size", "chunk_delay", "required", "numeric"})


def import_path(settings: Settings, file_path: str) -> Path:
    """``file_path`` (absolute, or relative to FLEET_VAR_DIR) resolved inside the var directory.

    A task message is data from the outside: it must not name any file the worker can read.
    """
    root = settings.var_dir.resolve()
    path = (root / file_path).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"file_path must be inside {root} (FLEET_VAR_DIR), not {file_path!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    return path


def row_error(row: dict[str | None, Any], width: int, required: list[str], numeric: list[str]) -> str | None:
    """Why a row cannot be imported, or None."""
    if None in row or any(value is None for value in row.values()):
        return f"expected {width} columns"
    missing = [name for name in required if not str(row.get(name, "")).strip()]
    if missing:
        return f"empty required column(s): {', '.join(missing)}"
    for name in numeric:
        try:
            float(row.get(name) or "")
        except ValueError:
            return f"column {name!r} is not a number: {row.get(name)!r}"
    return None


def _checked_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; expected some of {sorted(OPTIONS)}")
    chunk = options.setdefault("chunk_size", DEFAULT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk_size must be a whole number >= 1, not {chunk!r}")
    delay = options.setdefault("chunk_delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 60:
        raise ValueError(f"chunk_delay must be 0 to 60 seconds, not {delay!r}")
    return options


@shared_task(bind=True, name="tasks.import_csv")
def import_csv(self: Task, file_path: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Import the rows of a CSV file (header line first) in chunks of ``options["chunk_size"]``.

    Valid rows are written to ``var/data/imports/<task id>.jsonl``; a row with
    the wrong number of columns, an empty ``options["required"]`` column or a
    non-number in an ``options["numeric"]`` column is skipped and listed in
    ``errors`` with its line number. PROGRESS is the guide's ``{processed,
    total, percent}`` after each chunk; ``chunk_delay`` stands in for the
    guide's per-chunk wait (seconds, default 0).
    """
    settings: Settings = self.app.fleet_settings
    options = _checked_options(options)
    path = import_path(settings, file_path)
    with path.open(newline="") as handle:
        total_rows = max(sum(1 for record in csv.reader(handle) if record) - 1, 0)  # DictReader skips blank lines
    output = settings.data_dir / "imports" / f"{self.request.id or path.stem}.jsonl"
    output.parent.mkdir(parents=True, exist_ok=True)
    processed = imported = 0
    errors: list[dict[str, Any]] = []
    with path.open(newline="") as source, output.open("w") as sink:
        reader = csv.DictReader(source)
        width = len(reader.fieldnames or [])
        required, numeric = list(options.get("required", [])), list(options.get("numeric", []))
        for row in reader:
            problem = row_error(row, width, required, numeric)
            if problem is None:
                sink.write(json.dumps(row) + "\n")
                imported += 1
            else:
                errors.append({"row": reader.line_num, "error": problem})
            processed += 1
            if processed % options["chunk_size"] == 0 or processed == total_rows:
                time.sleep(options["chunk_delay"])
                percent = int(processed / total_rows * 100) if total_rows else 100
                meta = {"processed": processed, "total": total_rows, "percent": percent}
                self.update_state(state=PROGRESS, meta=meta)
    return {
        "status": "completed",
        "total_rows": total_rows,
        "processed": processed,
        "imported": imported,
        "errors": errors,
        "output": str(output),
    }
