"""Atomic file writes: write `<final>.tmp`, rename on success, delete on error.

Every reader in lead-stream ignores `*.tmp`, so a killed writer never leaves a half-written file
that looks finished.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path of `final`; rename it onto `final` when the block succeeds.

    Args:
        final: the path the finished file must have.

    Yields:
        `<final>.tmp` (a process-unique variant if several writers race), to be written by the caller.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(final: Path, payload: bytes) -> None:
    """Write `payload` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(payload)


def atomic_write_text(final: Path, text: str) -> None:
    """Write `text` (UTF-8) to `final` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


def list_finished(directory: Path, pattern: str = "*") -> list[Path]:
    """Sorted files of `directory` matching `pattern`, leaving out unfinished `*.tmp` files."""
    return sorted(p for p in Path(directory).glob(pattern) if not p.name.endswith(TMP_SUFFIX))


def remove_stale_tmp(directory: Path) -> int:
    """Delete leftover `*.tmp` files of a killed run below `directory`; returns how many."""
    stale = list(Path(directory).rglob(f"*{TMP_SUFFIX}")) if Path(directory).exists() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
