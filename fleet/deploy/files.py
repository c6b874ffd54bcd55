"""Rendered files on disk: what differs from a fresh render, and writing one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: The first comment of every rendered file.
GENERATED = "Rendered by `fleet render {target}` from fleet/pools.py and fleet/deploy/values.py; do not edit."


def drift(rendered: Mapping[str, str], directory: Path) -> list[str]:
    """How ``directory`` differs from ``rendered``: changed, missing and extra files."""
    problems = [
        f"{directory / name}: {'differs from' if (directory / name).exists() else 'missing in'} a fresh render"
        for name, text in rendered.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
    if directory.is_dir():  # folders (deploy/prometheus/tests) are not the render's
        problems += [
            f"{path}: not rendered any more"
            for path in sorted(directory.iterdir())
            if path.is_file() and path.name not in rendered
        ]
    return problems


def write(rendered: Mapping[str, str], directory: Path) -> list[Path]:
    """Write the rendered files, removing any the render no longer makes (the folder is the render's)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.is_file() and path.name not in rendered:
            path.unlink()
    written = []
    for name, text in rendered.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written
