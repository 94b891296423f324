"""One cache per content: packing options reuse it, `lead-stream caches` lists and removes caches, a run names
the cache it reads, and a cache can live outside the data root (issue 13, points 4 and 7)."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from lead_stream.cache.inventory import find_cache, list_caches
from lead_stream.cache.manifest import read_manifest
from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.cli.main import app


def test_packing_options_reuse_the_cache_and_caches_lists_and_removes_13(
    sharded_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(sharded_root, root)
    (first,) = list_caches(root)
    summary = write_shards(
        root,
        config=ShardConfig(workers=1, max_samples_per_shard=1000, max_shard_bytes=64 << 20, progress=False),
    )
    assert summary.cache_dir == first.cache_dir and summary.num_routes_built == 0  # same cache, all reused
    # nothing was rebuilt, so the manifest still records the packing its shards were cut with (a no-op
    # writes nothing, issue 15)
    assert read_manifest(first.cache_dir).info["packing"]["max_samples_per_shard"] == 16
    other = write_shards(root, config=ShardConfig(workers=1, collections=("posttrain",), progress=False))
    assert other.cache_dir != first.cache_dir

    runner = CliRunner()
    result = runner.invoke(app, ["caches", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(first.pipeline_id) and "pretrain+posttrain" in lines[0]
    assert lines[1].startswith(other.pipeline_id) and lines[1].endswith("<- train reads this one")
    assert " MB " in lines[0] and "current code" in lines[0]
    assert lines[-1] == f"remove the others: lead-stream caches {root} --remove {first.pipeline_id}"
    result = runner.invoke(app, ["caches", str(root), "--remove", first.pipeline_id])
    assert result.exit_code == 0 and "removed" in result.output
    assert [c.pipeline_id for c in list_caches(root)] == [other.pipeline_id]
    assert runner.invoke(app, ["caches", str(root), "--remove", "nope"]).exit_code == 2


def test_a_cache_root_outside_the_data_root_is_built_found_and_verified_13(
    sharded_root: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "fast_disk"
    runner = CliRunner()
    args = ["shard", str(sharded_root), "--workers", "1", "--max-samples-per-shard", "16", "--no-progress"]
    result = runner.invoke(app, [*args, "--cache-dir", str(elsewhere)])
    assert result.exit_code == 0, result.output
    (built,) = list_caches(elsewhere)
    assert built.cache_dir.parent == elsewhere and find_cache(elsewhere) == built.cache_dir
    result = runner.invoke(app, ["verify", "--cache-dir", str(elsewhere)])
    assert result.exit_code == 0 and result.output.startswith("ok:"), result.output


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_whole_pipeline_runs_on_a_read_only_data_root_13(lead_root: Path, tmp_path: Path) -> None:
    from train_helpers import TINY

    raw = tmp_path / "shared_mount" / "carla_leaderboard2"
    shutil.copytree(lead_root, raw, ignore=shutil.ignore_patterns("index", "cache"))
    for path in [raw, *raw.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # read-only (root ignores it: the snapshot checks it)
    before = _snapshot(raw)
    work, caches = tmp_path / "work", tmp_path / "nvme_cache"
    runner = CliRunner()
    try:
        for args in (
            ["index", str(raw), "--out", str(work), "--workers", "1", "--no-progress"],
            ["shard", str(work), "--workers", "1", "--no-progress", "--cache-dir", str(caches)],
            [
                "train",
                "pretrain",
                f"carla_root={work}",
                f"cache_dir={caches}",
                f"logdir={tmp_path / 'run'}",
                "batch_size=2",
                "epoch_size=2",
                "epochs=1",
                *TINY,
                "visualize_training=false",
            ],
        ):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
    finally:
        for path in [raw, *raw.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert _snapshot(raw) == before  # nothing written, nothing touched under the data root
    (cache,) = list_caches(caches)
    assert f"cache {cache.cache_dir}, collection 'pretrain'" in result.output
    assert (tmp_path / "run" / "model_0000.pth").is_file()
