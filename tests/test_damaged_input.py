"""Damaged input never reaches the cache, and every command names what is damaged (#16).

Each test damages a private copy of the synthetic tree (or of its cache) in the way the bad-input corpus
found slipping through, then runs the real command or library call on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli as _cli

from lead_stream.cache.manifest import read_manifest, resolve_cache_dir, verify_cache
from lead_stream.cache.shard import LOCK_FILENAME, ShardConfig, write_shards
from lead_stream.core.errors import LeadFormatError
from lead_stream.core.locks import exclusive_lock
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.loader.catalog_store import CATALOG_DIRNAME

TEST_CONFIG = ShardConfig(workers=1, max_samples_per_shard=16, progress=False)


def _copy(source: Path, tmp_path: Path, *, with_cache: bool) -> Path:
    target = tmp_path / "carla_leaderboard2"
    shutil.copytree(source, target, ignore=None if with_cache else shutil.ignore_patterns("cache"))
    return target


def _first_route(root: Path) -> Path:
    return sorted(p.parent.parent for p in (root / "data").glob("*/*/rgb/0005.jpg"))[0]


def test_a_truncated_camera_jpeg_is_a_failure_row_and_the_rest_of_the_route_is_cached_16(
    indexed_root: Path, tmp_path: Path
) -> None:
    copy = _copy(indexed_root, tmp_path, with_cache=False)
    bad = _first_route(copy) / "rgb" / "0005.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size * 2 // 3])  # cut short mid-scan
    clean = read_manifest(resolve_cache_dir(indexed_root)) if (indexed_root / "cache").exists() else None
    summary = write_shards(copy, config=TEST_CONFIG)
    manifest = read_manifest(summary.cache_dir)
    assert summary.complete and summary.num_failures == 1
    failure = manifest.failures.row(0, named=True)
    assert failure["file"].endswith("rgb/0005.jpg") and "truncated" in failure["reason"]
    route_id = failure["route_id"]
    kept = manifest.samples.filter(manifest.samples["route_id"] == route_id)["frame_idx"].to_list()
    assert 5 not in kept and len(kept) >= 10  # only the damaged frame is left out
    if clean is not None:
        assert len(manifest.samples) == len(clean.samples) - 1
    loader = make_loader(copy, config=LoaderConfig(batch_size=8, num_workers=0, perturbation_prob=0.5))
    assert sum(batch.size for batch in loader) >= len(manifest.samples)  # every cached sample decodes

    shutil.rmtree(copy / "cache")
    done = _cli("shard", str(copy), "--workers", "1", "--no-progress", "--strict")
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert "rgb/0005.jpg" in done.stderr and "truncated JPEG" in done.stderr


def test_a_jpeg_damaged_inside_its_scan_is_refused_too_16(indexed_root: Path, tmp_path: Path) -> None:
    copy = _copy(indexed_root, tmp_path, with_cache=False)
    bad = _first_route(copy) / "rgb_perturbated" / "0005.jpg"
    payload = bytearray(bad.read_bytes())
    middle = len(payload) // 2
    payload[middle : middle + 400] = b"\xff" * 400  # markers inside the entropy-coded data; EOI intact
    bad.write_bytes(bytes(payload))
    with pytest.raises(LeadFormatError, match="rgb_perturbated/0005.jpg: corrupt JPEG"):
        write_shards(copy, config=dataclasses.replace(TEST_CONFIG, strict=True))


def _garble(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])  # cut short: the Parquet footer is gone


def test_a_missing_shard_is_named_by_make_loader_and_by_train_16(sharded_root: Path, tmp_path: Path) -> None:
    copy = _copy(sharded_root, tmp_path, with_cache=True)
    shard = sorted(resolve_cache_dir(copy).glob("shard-*.tar"))[1]
    shard.unlink()
    with pytest.raises(LeadFormatError, match="lead-stream shard") as caught:
        make_loader(copy, config=LoaderConfig(num_workers=0))
    assert caught.value.path == shard and "missing" in caught.value.problem
    done = _cli(
        "train", "pretrain", f"carla_root={copy}", f"logdir={tmp_path / 'run'}", "model.preset=compact",
        "max_steps=1", "num_workers=0", "batch_size=2",
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.splitlines()[-1].startswith(
        f"error: {shard}: "
    )  # after the config
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("table", "command"),
    [
        ("index/routes.parquet", "shard"),
        ("index/buckets/pretrain.parquet", "shard"),
        ("index/buckets/pretrain.parquet", "loader"),
        ("cache/samples.parquet", "loader"),
        ("cache/shards.parquet", "verify"),
    ],
)
def test_a_corrupt_table_is_a_named_error_with_the_repair_command_16(
    sharded_root: Path, tmp_path: Path, table: str, command: str
) -> None:
    copy = _copy(sharded_root, tmp_path, with_cache=True)
    cache_dir = resolve_cache_dir(copy)
    path = cache_dir / table.split("/", 1)[1] if table.startswith("cache/") else copy / table
    if path.is_dir():  # a table stored as parts (issue 15): garble one part
        path = sorted(path.glob("*.parquet"))[0]
    _garble(path)
    if command == "loader":
        # the loader reads the manifest tables when it builds its catalog: drop one an earlier test mapped
        shutil.rmtree(cache_dir / CATALOG_DIRNAME, ignore_errors=True)
        with pytest.raises(LeadFormatError, match="unreadable Parquet") as caught:
            make_loader(copy, config=LoaderConfig(num_workers=0))
        assert caught.value.path == path
        return
    args = ["--workers", "1", "--no-progress"] if command == "shard" else []
    done = _cli(command, str(copy), *args)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {path}: unreadable Parquet")
    repair = "lead-stream index" if table.startswith("index/") else "lead-stream shard"
    assert repair in done.stderr and "Traceback" not in done.stderr


def _shard_cmd(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lead_stream.cli.main", "shard", str(root), "--workers", "1", "--no-progress",
            "--max-samples-per-shard", "16", *extra]  # fmt: skip


def test_two_shard_runs_started_together_leave_the_clean_cache_16(sharded_root: Path, tmp_path: Path) -> None:
    copy = _copy(sharded_root, tmp_path, with_cache=False)
    runs = [subprocess.Popen(_shard_cmd(copy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    time.sleep(1.0)  # the corpus case: the second one second later
    runs.append(subprocess.Popen(_shard_cmd(copy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert (
        "locked by pid" in outputs[1][1] and "waiting" in outputs[1][1]
    )  # the second one said whom it waits for
    assert "built 0 routes" in outputs[1][0]  # it found the first one's work finished and reused it
    clean = read_manifest(resolve_cache_dir(sharded_root))
    built = read_manifest(resolve_cache_dir(copy))
    assert built.pipeline_id == clean.pipeline_id
    assert built.samples.drop("shard").equals(clean.samples.drop("shard"))
    assert sorted(built.shards["sha256"]) == sorted(clean.shards["sha256"])
    assert verify_cache(copy).ok
    assert {p.name for p in built.cache_dir.glob("shard-*.tar")} == set(built.shards["shard"])


def test_shard_no_wait_exits_2_naming_the_holder_16(sharded_root: Path, tmp_path: Path) -> None:
    copy = _copy(sharded_root, tmp_path, with_cache=True)
    cache_dir = resolve_cache_dir(copy)
    with exclusive_lock(cache_dir / LOCK_FILENAME, wait=False, what="test"):
        done = subprocess.run(_shard_cmd(copy, "--no-wait"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {cache_dir / LOCK_FILENAME}: ")
    assert f"locked by pid {os.getpid()}" in done.stderr


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 3 MiB tmpfs (needs root: skipped elsewhere); its size is changed with `resize(mb)`."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")

    def resize(mb: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={mb}m", str(mount)], check=True)

    try:
        yield mount, resize
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_named_error_and_leaves_nothing_half_written_16(
    indexed_root: Path, tmp_path: Path, small_disk
) -> None:
    mount, resize = small_disk
    copy = _copy(indexed_root, tmp_path, with_cache=False)
    (copy / "cache").symlink_to(mount)  # the cache lives on the small disk
    done = subprocess.run(_shard_cmd(copy), capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    error = done.stderr.splitlines()[-1]
    assert error.startswith("error: ") and "No space left on device" in error and "lead-stream shard" in error
    assert "Traceback" not in done.stderr
    (cache_dir,) = [p for p in mount.iterdir() if p.is_dir()]
    assert not list(cache_dir.rglob("*.tmp"))  # nothing half-written
    assert not (cache_dir / "manifest.json").exists()  # nothing passed off as complete
    for shard in cache_dir.glob("shard-*.tar"):  # what stayed is finished: journaled, full size
        entry = json.loads((cache_dir / "journal" / f"{shard.stem}.json").read_text())
        assert shard.stat().st_size == entry["shard"]["size_bytes"]

    resize(256)  # space freed: the rerun completes the cache
    summary = write_shards(copy, config=TEST_CONFIG)
    assert summary.complete and verify_cache(copy).ok


def _rename_route(root: Path, new_name: str) -> str:
    route = _first_route(root)
    route.rename(route.with_name(new_name))
    return f"{route.parent.name}/{new_name}"


def test_a_utf8_route_name_works_from_index_to_batches_16(lead_root: Path, tmp_path: Path) -> None:
    from lead_stream.index import IndexConfig, build_index

    copy = _copy(lead_root, tmp_path, with_cache=False)
    shutil.rmtree(copy / "index", ignore_errors=True)
    route_id = _rename_route(copy, "Town13_Rep0_route_Straße_日本語_ñ_01_16_11_45_42")
    build_index(copy, config=IndexConfig(workers=1, progress=False))
    summary = write_shards(copy, config=TEST_CONFIG)
    manifest = read_manifest(summary.cache_dir)
    assert summary.num_failures == 0 and route_id in set(manifest.samples["route_id"])
    assert verify_cache(copy).ok
    import webdataset as wds  # a plain reader sees the UTF-8 keys too

    shard = manifest.shards.filter(manifest.shards["route_id"] == route_id)["shard"][0]
    keys = {
        sample["__key__"] for sample in wds.WebDataset(str(summary.cache_dir / shard), shardshuffle=False)
    }
    assert keys == set(manifest.samples.filter(manifest.samples["shard"] == shard)["key"])
    for num_workers in (0, 2):
        loader = make_loader(copy, config=LoaderConfig(batch_size=8, num_workers=num_workers))
        served = [route for batch in loader for route in batch.route_id]
        assert served.count(route_id) == int((manifest.samples["route_id"] == route_id).sum())
    done = _cli("show", f"{route_id}/0003", "--root", str(copy), "--out", str(tmp_path / "s.png"))
    assert done.returncode == 0, done.stderr


def test_a_route_name_too_long_for_a_tar_header_is_a_named_failure_16(
    lead_root: Path, tmp_path: Path
) -> None:
    from lead_stream.index import IndexConfig, build_index

    copy = _copy(lead_root, tmp_path, with_cache=False)
    shutil.rmtree(copy / "index", ignore_errors=True)
    route_id = _rename_route(
        copy, "Town13_" + "日本" * 38
    )  # 235 bytes: a valid file name, too long for USTAR
    build_index(copy, config=IndexConfig(workers=1, progress=False))
    summary = write_shards(copy, config=TEST_CONFIG)
    failures = read_manifest(summary.cache_dir).failures
    assert summary.complete and set(failures["route_id"]) == {route_id}
    assert "UTF-8" in failures["reason"][0] and "USTAR" in failures["reason"][0]
    done = _cli("shard", str(copy), "--workers", "1", "--no-progress", "--strict")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "USTAR" in done.stderr
