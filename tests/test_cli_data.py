"""CLI end to end: synth → index → query → buckets; user errors exit with code 2 and name the file.

Exit codes are checked through `python -m lead_stream.cli.main` (CliRunner bypasses `main()`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cli_helpers import run_cli as _cli
from typer.testing import CliRunner

from lead_stream.cli.main import app
from lead_stream.core import layout
from lead_stream.sources import Route, discover_routes


def test_synth_index_query_buckets_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "carla_leaderboard2"
    done = _cli(
        "synth", root, "--routes", "1", "--frames", "18", "--rejected", "1", "--seed", "3", "--workers", "1"
    )
    assert done.returncode == 0, done.stderr
    done = _cli("index", root, "--workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "2 routes (1 usable" in done.stdout
    assert (root / "index" / "frames.parquet").is_dir()
    assert (root / "index" / "buckets" / "posttrain.parquet").is_dir()  # one part per frames part
    done = _cli("query", "SELECT count(*) AS n FROM pretrain", "--root", root, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["n", str(18 - 2)]
    done = _cli("buckets", root)
    assert done.returncode == 0, done.stderr
    assert "pretrain" in done.stdout and "posttrain" in done.stdout and "town" in done.stdout


def test_index_of_missing_root_exits_2_and_names_it(tmp_path: Path) -> None:
    done = _cli("index", tmp_path / "nowhere", "--no-progress")
    assert done.returncode == 2
    assert f"error: {tmp_path / 'nowhere' / 'data'}" in done.stderr


def test_strict_index_of_corrupt_route_exits_2_naming_the_file(copy_lead_root: Path) -> None:
    route_id = next(r for r in discover_routes(copy_lead_root) if Route(copy_lead_root, r).usability()[0])
    meta = layout.modality_path(layout.route_path(copy_lead_root, route_id), "metas", 7)
    meta.write_bytes(b"\xfd7zXZ\x00 not really")
    done = _cli("index", copy_lead_root, "--strict", "--no-progress", "--workers", "1")
    assert done.returncode == 2
    assert str(meta) in done.stderr and done.stderr.startswith("error: ")
    done = _cli("index", copy_lead_root, "--no-progress", "--workers", "1")
    assert done.returncode == 0
    assert f"unreadable route {route_id}" in done.stderr and "metas/0007.pkl" in done.stderr


def test_bad_sql_and_missing_index_exit_2(indexed_root: Path, tmp_path: Path) -> None:
    done = _cli("query", "SELECT nope FROM frames", "--root", indexed_root)
    assert done.returncode == 2 and "error: query:" in done.stderr
    done = _cli("query", "SELECT 1", "--root", tmp_path)
    assert done.returncode == 2 and "frames.parquet" in done.stderr


def test_buckets_define_writes_a_collection_the_query_command_sees(
    indexed_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(indexed_root, root)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "buckets",
            str(root),
            "--define",
            "heldout",
            "--bucket",
            "held=town = 'Town13' OR speed > 1000",
            "--bucket",
            "rest=TRUE",
            "--rate",
            "held=0",
            "--rate",
            "rest=fill",
            "--where",
            "posttrain",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote collection 'heldout'" in result.output
    result = runner.invoke(
        app,
        [
            "query",
            "SELECT bucket, count(*) AS n FROM heldout GROUP BY bucket",
            "--root",
            str(root),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    posttrain = runner.invoke(
        app, ["query", "SELECT count(*) AS n FROM posttrain", "--root", str(root), "--format", "json"]
    )
    assert sum(r["n"] for r in rows) == json.loads(posttrain.output)[0]["n"]
    done = _cli("buckets", root, "--define", "x", "--bucket", "noequals")
    assert done.returncode == 2 and "--bucket" in done.stderr
