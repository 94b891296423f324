"""`lead-stream shard | verify | show` end to end: distributed build + merge, exit codes, the PNG."""

from __future__ import annotations

import shutil

from cli_helpers import run_cli as _cli
from PIL import Image
from typer.testing import CliRunner

from lead_stream.cache.manifest import read_manifest, resolve_cache_dir
from lead_stream.cache.show import PNG_HEIGHT_PX, PNG_WIDTH_PX
from lead_stream.cli.main import app

runner = CliRunner()
SHARD_ARGS = ["--workers", "1", "--max-samples-per-shard", "16", "--no-progress"]


def test_distributed_build_of_two_ranks_plus_merge_equals_the_single_build(
    indexed_root, sharded_root, tmp_path
):
    copy = tmp_path / "carla_leaderboard2"
    shutil.copytree(indexed_root, copy, ignore=shutil.ignore_patterns("cache"))
    for rank in (1, 0):
        result = runner.invoke(
            app, ["shard", str(copy), *SHARD_ARGS, "--rank", str(rank), "--world-size", "2"]
        )
        assert result.exit_code == 0, result.output
        assert "partial" in result.output
    cache_dirs = list((copy / "cache").iterdir())
    assert len(cache_dirs) == 1 and not (cache_dirs[0] / "manifest.json").exists()
    partials = sorted(p.name for p in cache_dirs[0].glob("manifest-rank-*"))
    assert partials == ["manifest-rank-0-of-2.json", "manifest-rank-1-of-2.json"]
    result = runner.invoke(app, ["shard", str(copy), *SHARD_ARGS, "--merge"])
    assert result.exit_code == 0, result.output
    merged = read_manifest(resolve_cache_dir(copy))
    single = read_manifest(resolve_cache_dir(sharded_root))
    assert merged.pipeline_id == single.pipeline_id
    assert set(merged.samples["key"]) == set(single.samples["key"])
    assert set(merged.samples["sha256"]) == set(single.samples["sha256"])
    assert sorted(merged.shards["sha256"]) == sorted(single.shards["sha256"])
    assert not list(cache_dirs[0].glob("manifest-rank-*"))


def test_merge_before_every_rank_finished_is_a_user_error(indexed_root, tmp_path):
    copy = tmp_path / "carla_leaderboard2"
    shutil.copytree(indexed_root, copy, ignore=shutil.ignore_patterns("cache"))
    result = runner.invoke(app, ["shard", str(copy), *SHARD_ARGS, "--merge"])
    assert result.exit_code == 2 and "not built yet" in result.output


def test_verify_exit_codes_ok_bad_and_no_cache(sharded_root, tmp_path):
    result = runner.invoke(app, ["verify", str(sharded_root)])
    assert result.exit_code == 0 and result.output.startswith("ok:")

    copy = tmp_path / "carla_leaderboard2"
    shutil.copytree(sharded_root, copy)
    shard_file = sorted(resolve_cache_dir(copy).glob("shard-*.tar"))[0]
    data = bytearray(shard_file.read_bytes())
    data[1000] ^= 0x01
    shard_file.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "corrupt" in result.output and shard_file.name in result.output

    done = _cli("verify", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "cache" in done.stderr


def test_strict_build_of_a_corrupt_frame_exits_2_naming_the_file(indexed_root, tmp_path):
    copy = tmp_path / "carla_leaderboard2"
    shutil.copytree(indexed_root, copy, ignore=shutil.ignore_patterns("cache"))
    bad = sorted((copy / "data").glob("*/*/lidar/0001.laz"))[0]
    bad.write_bytes(b"LASF" + bytes(20))
    done = _cli("shard", str(copy), "--workers", "1", "--no-progress", "--strict")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "lidar/0001.laz" in done.stderr


def test_shard_without_index_exits_2_naming_the_file(tmp_path):
    done = _cli("shard", str(tmp_path), "--no-progress")
    assert done.returncode == 2 and "index" in done.stderr and done.stderr.startswith("error: ")


def test_show_writes_a_png_of_the_documented_size(sharded_root, tmp_path):
    key = read_manifest(resolve_cache_dir(sharded_root)).samples["key"][5]
    out = tmp_path / "sample.png"
    result = runner.invoke(app, ["show", key, "--out", str(out), "--root", str(sharded_root)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (PNG_WIDTH_PX, PNG_HEIGHT_PX) == (1152, 704)
    result = runner.invoke(
        app, ["show", key, "--out", str(tmp_path / "p.png"), "--root", str(sharded_root), "--perturbated"]
    )
    assert result.exit_code == 0 and Image.open(tmp_path / "p.png").size == (1152, 704)


def test_show_unknown_key_exits_2(sharded_root, tmp_path):
    result = runner.invoke(
        app, ["show", "Nope/route/0001", "--out", str(tmp_path / "x.png"), "--root", str(sharded_root)]
    )
    assert result.exit_code == 2 and "no sample with key" in result.output


def test_show_on_a_cache_of_another_member_layout_exits_2_naming_the_manifest(sharded_root, tmp_path):
    import json

    copy = tmp_path / "root"
    shutil.copytree(sharded_root, copy)
    manifest = read_manifest(resolve_cache_dir(copy))
    info_path = manifest.cache_dir / "manifest.json"
    info = json.loads(info_path.read_text())
    info["members"] = ["rgb.jpg", "rgb_pert.jpg", "semantic.lz4", "targets.json"]  # a layout-v1 style cache
    info_path.write_text(json.dumps(info))
    done = _cli("show", manifest.samples["key"][0], "--out", str(tmp_path / "x.png"), "--root", str(copy))
    assert done.returncode == 2
    assert "manifest.json" in done.stderr and "lack members" in done.stderr
    assert not (tmp_path / "x.png").exists()
