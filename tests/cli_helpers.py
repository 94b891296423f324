"""Run the real CLI in a subprocess: `main()` maps user errors to exit 2, which typer's CliRunner bypasses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m lead_stream.cli.main ARGS...` in `cwd`; stdout/stderr captured as text, never raising on
    a nonzero exit (the tests assert on `returncode`)."""
    command = [sys.executable, "-m", "lead_stream.cli.main", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
