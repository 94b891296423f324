"""A cache a run can trust (issue 13): a shard `verify` found corrupt is rebuilt by the next plain `shard` and at
once by `verify --repair` (point 3), and a run over a cache root holding several complete caches names the one
it reads and says it took the newest (point 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

from polars.testing import assert_frame_equal
from train_helpers import TINY
from typer.testing import CliRunner

from lead_stream.cache.inventory import list_caches
from lead_stream.cache.manifest import read_manifest, resolve_cache_dir, verify_cache
from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.cli.main import app

SHARD = ShardConfig(workers=1, max_samples_per_shard=16, progress=False)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))


def _samples(cache_dir: Path):
    return read_manifest(cache_dir).samples.select("key", "sha256", "size_bytes").sort("key")


def test_a_shard_verify_found_corrupt_is_rebuilt_by_the_next_shard_and_by_verify_repair_13(
    sharded_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(sharded_root, root)
    cache_dir = resolve_cache_dir(root)
    good = _samples(cache_dir)
    first = sorted(cache_dir.glob("shard-*.tar"))[0]
    runner = CliRunner()

    _flip_a_byte(first)
    assert write_shards(root, config=SHARD).num_routes_built == 0  # unverified, a shard is trusted ...
    result = runner.invoke(app, ["verify", str(root)])
    assert result.exit_code == 1 and f"corrupt: {first}" in result.output
    rebuilt = write_shards(root, config=SHARD)  # ... once verify has seen it, the next shard rebuilds it
    assert rebuilt.num_routes_built == 1 and rebuilt.complete
    assert verify_cache(root).ok
    assert_frame_equal(_samples(cache_dir), good)
    assert write_shards(root, config=SHARD).num_routes_built == 0  # and forgets it once rebuilt

    victim = sorted(cache_dir.glob("shard-*.tar"))[1]
    _flip_a_byte(victim)
    result = runner.invoke(app, ["verify", str(root), "--repair"])
    assert result.exit_code == 0, result.output
    assert f"corrupt: {victim}" in result.output and result.output.strip().splitlines()[-1].startswith("ok:")
    assert verify_cache(root).ok
    assert_frame_equal(_samples(cache_dir), good)


def test_a_run_over_several_complete_caches_names_the_newest_it_reads_13(
    sharded_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(sharded_root, root)
    newest = write_shards(root, config=ShardConfig(workers=1, collections=("pretrain",), progress=False))
    caches = [c for c in list_caches(root) if c.complete]
    assert len(caches) == 2 and newest.cache_dir in {c.cache_dir for c in caches}

    args = [f"carla_root={root}", f"logdir={tmp_path / 'run'}", "batch_size=2", "epoch_size=2", "epochs=1"]
    result = CliRunner().invoke(app, ["train", "pretrain", *args, *TINY, "visualize_training=false"])
    assert result.exit_code == 0, result.output
    assert f"cache {newest.cache_dir}" in result.output
    assert "newest of 2 complete caches" in result.output and "lead-stream caches" in result.output
