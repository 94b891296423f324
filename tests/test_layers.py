"""The import-layer contract (pyproject [tool.importlinter], `.ci/lint_layers.py`) holds, and breaks loudly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = REPO / ".ci" / "lint_layers.py"

pytestmark = pytest.mark.skipif(
    shutil.which("lint-imports") is None, reason="import-linter is not installed (pip install -e '.[test]')"
)


def _copy_repo(into: Path) -> Path:
    for name in ("lead_stream", "cli", "schemas"):
        shutil.copytree(REPO / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", into / "pyproject.toml")
    return into


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LINT), "--root", str(root)], capture_output=True, text=True)


def test_the_stages_import_only_downstream_10():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "chain"),
    [
        (
            "lead_stream/index/build.py",
            "from lead_stream.train import train",
            "lead_stream.index.build -> lead_stream.train",
        ),
        (
            "lead_stream/core/layout.py",
            "from lead_stream.sources import Route",
            "lead_stream.core.layout -> lead_stream.sources",
        ),
        (
            "lead_stream/loader/catalog.py",
            "from lead_stream.model import TFv6",
            "lead_stream.loader.catalog -> lead_stream.model",
        ),
        (
            "lead_stream/cache/shard.py",
            "from lead_stream.cli import main",
            "lead_stream.cache.shard -> lead_stream.cli",
        ),
        (
            "lead_stream/evaluate/metrics.py",
            "from lead_stream.train import train",
            "lead_stream.evaluate.metrics -> lead_stream.train",
        ),
    ],
    ids=[
        "index-imports-train",
        "core-imports-sources",
        "loader-imports-model-sibling",
        "cache-imports-cli",
        "evaluate-imports-train-14",
    ],
)
def test_a_backwards_import_fails_the_contract_and_is_named_10(tmp_path, module, bad_import, chain):
    root = _copy_repo(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n\ndef _backwards() -> None:\n    {bad_import}\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and chain in result.stdout, result.stdout
