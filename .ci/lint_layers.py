#!/usr/bin/env python3
"""Check the import-layer contract of pyproject.toml ([tool.importlinter]) with import-linter.

`cli/` and `schemas/` are installed as `lead_stream.cli` and `lead_stream.schemas` (pyproject package-dir),
which import-linter cannot see in the source tree; this script stages the package as it is installed (a
copy in a temporary folder) and runs `lint-imports` on it. Exit code and report are import-linter's.

Usage: python3 .ci/lint_layers.py [--root REPO]   (default: this repository)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def stage(root: Path, into: Path) -> Path:
    """Copy `root`'s lead_stream/, cli/ and schemas/ into `into` in their installed layout."""
    package = into / "lead_stream"
    shutil.copytree(root / "lead_stream", package, ignore=IGNORE)
    shutil.copytree(root / "cli", package / "cli", ignore=IGNORE)
    shutil.copytree(root / "schemas", package / "schemas", ignore=IGNORE)
    shutil.copy(root / "pyproject.toml", into / "pyproject.toml")
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lead-stream-layers-") as tmp:
        staged = stage(args.root.resolve(), Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(staged), "PYTHONSAFEPATH": "1"}
        lint = [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ]
        command = [*lint, str(staged / "pyproject.toml"), "--no-cache"]
        return subprocess.run(command, cwd=staged, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
