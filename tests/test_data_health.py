"""Data-health commands: `lead-stream failures` names the failed frames (file, reason) and `query` reads the
cache's samples/shards/failures tables, so `show KEY` has its keys (issue 13, point 9)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.cli.main import app
from lead_stream.index.tables import table_path


def test_failures_lists_bad_frames_and_query_reads_the_cache_tables_13(
    indexed_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(indexed_root, root, ignore=shutil.ignore_patterns("cache"))
    frames = pl.read_parquet(table_path(root, "pretrain"))
    route_id, frame_idx = frames["route_id"][0], int(frames["frame_idx"][2])
    bad = root / "data" / route_id / "rgb" / f"{frame_idx:04d}.jpg"
    bad.write_bytes(b"not a jpeg")
    write_shards(root, config=ShardConfig(workers=1, max_samples_per_shard=16, progress=False))

    runner = CliRunner()
    result = runner.invoke(app, ["failures", str(root)])
    assert result.exit_code == 0, result.output
    assert "0 unreadable routes" in result.output and "1 failed frames in cache" in result.output
    assert f"rgb/{frame_idx:04d}.jpg" in result.output

    sql = "SELECT route_id, frame_idx, file, reason FROM failures"
    result = runner.invoke(app, ["query", sql, "--root", str(root), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = result.output.strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{route_id},{frame_idx},") and "rgb/" in rows[1]

    sql = "SELECT key FROM samples JOIN pretrain USING (route_id, frame_idx) ORDER BY key LIMIT 1"
    result = runner.invoke(app, ["query", sql, "--root", str(root), "--format", "csv"])
    key = result.output.strip().splitlines()[1]
    result = runner.invoke(app, ["show", key, "--root", str(root), "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 0, result.output
