"""Shared bits of the benchmark scripts' output: the aligned figures table and the JSON line's provenance."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def git_commit() -> str:
    """Short commit of the checkout the benchmark runs from ("unknown" outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> dict[str, object]:
    """Platform, Python and cores, for the JSON line."""
    return {"platform": platform.platform(), "python": platform.python_version(), "cores": cores()}


def print_rows(rows: list[tuple[str, str]]) -> None:
    """The figures table: names left-aligned in one column, then flushed before the JSON line."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    sys.stdout.flush()
