"""Lock file → one writer at a time: an advisory `flock` on a file that names its holder.

`exclusive_lock(path)` holds `fcntl.flock(LOCK_EX)` on `path` for the block and writes the holder (pid,
host, start time, command) into it, so a second writer can say who it waits for. The kernel drops the lock
when the holder exits, killed or not: a stale lock file never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lead_stream.core.errors import LeadFormatError

_LOG = logging.getLogger(__name__)


def lock_holder(path: Path) -> str:
    """Who holds (or last held) the lock at `path`, in words."""
    try:
        holder = json.loads(Path(path).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "an unknown process"
    if not holder:
        return "an unknown process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {started} ({holder.get('command')})"


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait: bool, what: str) -> Iterator[None]:
    """Hold the lock at `path` for the block.

    Args:
        path: the lock file (created if missing; never deleted, only its holder line changes).
        wait: when another process holds it, wait for it (logging who it is) instead of failing.
        what: what the lock guards, for messages ("the shard cache ...").

    Raises:
        LeadFormatError: `wait` is False and another process holds the lock (the message names it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(path)
            if not wait:
                raise LeadFormatError(path, f"{what} is locked by {holder}; wait for it to finish") from None
            _LOG.warning("%s: %s is locked by %s; waiting for it", path, what, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv[:3]) or "python",
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock
