"""Index → shards + manifest: round trip, plain readers, seeking, incremental builds, crashes, failures."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import webdataset as wds

from lead_stream.cache import features, identity, shard
from lead_stream.cache import frame as cache_frame
from lead_stream.cache.manifest import (
    read_manifest,
    read_sample_members,
    resolve_cache_dir,
    sample_sha256,
    verify_cache,
)
from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.cache.tar_writer import sample_key
from lead_stream.core import codecs, runs
from lead_stream.core.errors import LeadFormatError
from lead_stream.index import IndexConfig, build_index, read_bucket_members
from lead_stream.sources import Route

TEST_CONFIG = ShardConfig(workers=1, max_samples_per_shard=16, progress=False)


@pytest.fixture(scope="module")
def manifest(sharded_root: Path):
    return read_manifest(resolve_cache_dir(sharded_root))


def _copy_root(source: Path, tmp_path: Path, *, with_cache: bool) -> Path:
    target = tmp_path / "carla_leaderboard2"
    ignore = None if with_cache else shutil.ignore_patterns("cache")
    shutil.copytree(source, target, ignore=ignore)
    return target


def _expected_samples(root: Path) -> set[tuple[str, int]]:
    frames = pl.concat(
        [read_bucket_members(root, c).select("route_id", "frame_idx") for c in ("pretrain", "posttrain")]
    )
    return set(frames.unique().iter_rows())


def test_manifest_lists_every_bucket_frame_once(sharded_root, manifest):
    assert set(manifest.samples.select("route_id", "frame_idx").iter_rows()) == _expected_samples(
        sharded_root
    )
    assert manifest.samples["key"].is_unique().all()
    assert manifest.members == features.MEMBER_NAMES
    assert manifest.pipeline_id == manifest.cache_dir.name == identity.pipeline_id(TEST_CONFIG)
    assert (manifest.shards["num_samples"] <= 16).all()
    assert manifest.shards["num_samples"].sum() == len(manifest.samples)
    assert manifest.failures.is_empty()
    assert manifest.samples.group_by("shard").agg(pl.col("route_id").n_unique())["route_id"].max() == 1


def test_stored_members_round_trip_bit_exact_to_preprocessing(sharded_root, manifest):
    rows = manifest.samples.gather_every(23)
    for row in rows.iter_rows(named=True):
        route = Route(sharded_root, row["route_id"])
        frame = cache_frame.Frame(cache_frame.load_frame(route, row["frame_idx"]))
        stored = read_sample_members(manifest.shard_path(row["shard"]), row["offset"], row["size_bytes"])
        assert sorted(stored) == sorted(features.MEMBER_NAMES)
        for member in features.MEMBERS:
            expected = member.compute(frame)
            if member.kind == "jpg":
                raw = (
                    route.path
                    / ("rgb_perturbated" if member.perturbated else "rgb")
                    / f"{row['frame_idx']:04d}.jpg"
                ).read_bytes()
                assert stored[member.name] == expected == raw
            elif member.kind == "json":
                assert features.decode_member(member.name, stored[member.name]) == expected
            else:
                decoded = features.decode_member(member.name, stored[member.name])
                assert list(decoded) == list(expected) == [*features.VARIANTS, features.TARGETS_GROUP]
                assert decoded[features.TARGETS_GROUP] == expected[features.TARGETS_GROUP]
                for variant in features.VARIANTS:
                    arrays = expected[variant]
                    assert list(decoded[variant]) == list(arrays)
                    for name, array in arrays.items():
                        got = decoded[variant][name]
                        assert got.dtype == array.dtype and got.shape == array.shape, (variant, name)
                        np.testing.assert_array_equal(got, array, err_msg=f"{variant}/{name}")


def test_offsets_let_a_reader_seek_to_every_sample(manifest):
    for row in manifest.samples.iter_rows(named=True):
        members = read_sample_members(manifest.shard_path(row["shard"]), row["offset"], row["size_bytes"])
        assert sample_sha256(members) == row["sha256"]
        assert sample_key(row["route_id"], row["frame_idx"]) == row["key"]


def test_plain_webdataset_reads_keys_and_fields(manifest):
    urls = [str(manifest.shard_path(name)) for name in manifest.shards["shard"].to_list()]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        seen[sample["__key__"]] = sorted(k for k in sample if not k.startswith("__"))
    assert set(seen) == set(manifest.samples["key"].to_list())
    assert all(fields == sorted(features.MEMBER_NAMES) for fields in seen.values())
    decoded = next(iter(wds.WebDataset(urls[:1], shardshuffle=False).decode("rgb8")))
    assert decoded["rgb.jpg"].shape == (384, 1152, 3) and decoded["rgb_pert.jpg"].shape == (384, 1152, 3)
    assert isinstance(decoded["arrays.lz4"], bytes)  # no built-in lz4 decoder: our codec reads it
    arrays = codecs.decode("lz4", decoded["arrays.lz4"])  # the stored arrays (label rasters as runs)
    assert list(arrays) == ["normal", "perturbated", "targets"]
    assert isinstance(arrays["targets"], dict) and "speed_mps" in arrays["targets"]
    assert arrays["perturbated"]["boxes"].shape[1] == 9
    assert (
        runs.join_lengths(arrays["normal"]["semantic_lengths"], arrays["normal"]["semantic_long"]).sum()
        == 384 * 1152
    )
    dense = features.decode_member("arrays.lz4", decoded["arrays.lz4"])  # the dense view
    assert dense["normal"]["semantic"].shape == (384, 1152) and dense["targets"] == arrays["targets"]


def test_tarfile_sees_sorted_reproducible_ustar_members(manifest):
    path = manifest.shard_path(manifest.shards["shard"][0])
    with tarfile.open(path) as archive:
        infos = archive.getmembers()
    names = [i.name for i in infos]
    assert names == sorted(names, key=lambda n: (n.split(".", 1)[0], n.split(".", 1)[1]))
    assert all(i.mtime == 0 and i.mode == 0o444 and i.uid == 0 and i.gid == 0 for i in infos)
    assert all(i.uname == "" and i.gname == "" for i in infos)
    assert all(i.isreg() for i in infos)
    assert path.read_bytes()[257:263] == b"ustar\x00"


def test_shards_match_manifest_hashes_and_rebuild_byte_identical(sharded_root, manifest, tmp_path):
    assert verify_cache(sharded_root).ok
    copy = _copy_root(sharded_root, tmp_path, with_cache=False)
    summary = write_shards(copy, config=TEST_CONFIG)
    rebuilt = read_manifest(summary.cache_dir)
    assert rebuilt.shards["sha256"].to_list() == manifest.shards["sha256"].to_list()
    assert rebuilt.samples.drop("route_fingerprint").equals(manifest.samples.drop("route_fingerprint"))


def test_pipeline_id_changes_with_content_config():
    same_content = ShardConfig(max_samples_per_shard=16, workers=3, rank=1, world_size=2, strict=True)
    assert identity.pipeline_id(TEST_CONFIG) == identity.pipeline_id(same_content)
    packed_otherwise = ShardConfig(max_samples_per_shard=8, max_shard_bytes=1 << 20)
    assert identity.pipeline_id(TEST_CONFIG) == identity.pipeline_id(packed_otherwise)  # packing: same cache
    assert identity.pipeline_id(TEST_CONFIG) != identity.pipeline_id(
        ShardConfig(max_samples_per_shard=16, collections=("pretrain",))
    )


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _lead_stream_imports(module_name: str) -> set[str]:
    """`lead_stream.*` modules that `module_name`'s source imports (any scope)."""
    path = Path(__import__(module_name, fromlist=["_"]).__file__)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lead_stream"):
            for alias in node.names:  # `from package import module` names the module, else the module itself
                sub = f"{node.module}.{alias.name}"
                found.add(sub if importlib.util.find_spec(node.module) and _is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("lead_stream.")}
    return found


def test_pipeline_id_hashes_every_module_that_preprocessing_imports():
    # errors and layout only name files in error messages; they cannot change sample bytes
    exempt = {"lead_stream.core.errors", "lead_stream.core.layout"}
    reached, todo = set(), ["lead_stream.cache.features"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(_lead_stream_imports(name))
    hashed = {module.__name__ for module in identity.PREPROCESSING_SOURCES}
    assert reached - exempt <= hashed


def test_pipeline_id_hashes_the_raw_decoders_of_sources_12():
    # a route's values come from sources' decoders (LAZ as float64, depth PNGs, pickles): a change there
    # changes sample bytes; the stores below them only move bytes (zip and folder caches are identical)
    transport = {f"lead_stream.sources.{m}" for m in ("stores", "zips", "byte_sources", "discovery")}
    exempt = {"lead_stream.core.errors", "lead_stream.core.layout"} | transport
    reached, todo = set(), ["lead_stream.sources.route"]
    while todo:
        name = todo.pop()
        if name not in reached and name not in exempt:
            reached.add(name)
            todo.extend(_lead_stream_imports(name))
    hashed = {module.__name__ for module in identity.PREPROCESSING_SOURCES}
    assert {"lead_stream.sources.route", "lead_stream.sources.laz"} <= reached <= hashed


def test_incremental_rebuild_touches_only_changed_routes(sharded_root, manifest, tmp_path):
    copy = _copy_root(sharded_root, tmp_path, with_cache=True)
    cache_dir = copy / "cache" / manifest.pipeline_id
    before = {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("shard-*.tar")}
    unchanged = write_shards(copy, config=TEST_CONFIG)
    assert (unchanged.num_routes_built, unchanged.num_routes_reused) == (0, 4)

    changed_route = manifest.samples["route_id"][0]
    meta = Route(copy, changed_route).path / "metas" / "0003.pkl"
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 10**9))
    # touched in place (no folder mtime changes): --check-files compares every file's size and mtime
    build_index(copy, config=IndexConfig(workers=1, progress=False, check_files=True))
    summary = write_shards(copy, config=TEST_CONFIG)
    assert (summary.num_routes_built, summary.num_routes_reused) == (1, 3)
    after = read_manifest(cache_dir)
    old_shards = set(manifest.shards.filter(pl.col("route_id") == changed_route)["shard"])
    for name, mtime in before.items():
        if name in old_shards:
            assert not (cache_dir / name).exists()
        else:
            assert (cache_dir / name).stat().st_mtime_ns == mtime  # untouched
    assert set(after.samples["key"]) == set(manifest.samples["key"])
    assert verify_cache(copy).ok


def test_kill_during_build_leaves_only_journaled_shards_and_rerun_completes(
    indexed_root, manifest, tmp_path, monkeypatch
):
    copy = _copy_root(indexed_root, tmp_path, with_cache=False)
    calls = []

    def crash(path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(shard, "_after_shard_renamed", crash)
    with pytest.raises(KeyboardInterrupt):
        write_shards(copy, config=TEST_CONFIG)
    cache_dir = copy / "cache" / manifest.pipeline_id
    tars = sorted(p.name for p in cache_dir.glob("shard-*.tar"))
    assert len(tars) == 2 and not (cache_dir / "manifest.json").exists()
    assert all((cache_dir / "journal" / t.replace(".tar", ".json")).is_file() for t in tars)
    assert not list(cache_dir.glob("*.tmp"))

    monkeypatch.undo()
    summary = write_shards(copy, config=TEST_CONFIG)
    assert summary.complete
    rebuilt = read_manifest(cache_dir)
    assert set(rebuilt.samples["key"]) == set(manifest.samples["key"])
    assert {p.name for p in cache_dir.glob("shard-*.tar")} == set(rebuilt.shards["shard"])
    assert verify_cache(copy).ok


def test_corrupt_raw_frame_is_listed_not_fatal_and_strict_fails(indexed_root, manifest, tmp_path):
    copy = _copy_root(indexed_root, tmp_path, with_cache=False)
    row = manifest.samples.row(3, named=True)
    bad = Route(copy, row["route_id"]).path / "semantics" / f"{row['frame_idx']:04d}.png"
    bad.write_bytes(bad.read_bytes()[:40])
    summary = write_shards(copy, config=TEST_CONFIG)
    assert summary.complete and summary.num_failures == 1
    result = read_manifest(summary.cache_dir)
    failure = result.failures.row(0, named=True)
    assert (failure["route_id"], failure["frame_idx"]) == (row["route_id"], row["frame_idx"])
    assert failure["file"].endswith(f"semantics/{row['frame_idx']:04d}.png") and failure["reason"]
    assert row["key"] not in set(result.samples["key"])
    assert len(result.samples) == len(manifest.samples) - 1

    shutil.rmtree(copy / "cache")
    with pytest.raises(LeadFormatError, match="semantics"):
        write_shards(copy, config=dataclasses.replace(TEST_CONFIG, strict=True))


def test_parallel_workers_build_the_same_shards(indexed_root, manifest, tmp_path):
    copy = _copy_root(indexed_root, tmp_path, with_cache=False)
    summary = write_shards(copy, config=ShardConfig(workers=2, max_samples_per_shard=16, progress=False))
    assert read_manifest(summary.cache_dir).shards["sha256"].to_list() == manifest.shards["sha256"].to_list()


def test_verify_detects_a_flipped_byte_and_a_missing_shard(sharded_root, manifest, tmp_path):
    copy = _copy_root(sharded_root, tmp_path, with_cache=True)
    cache_dir = copy / "cache" / manifest.pipeline_id
    first, second = manifest.shards["shard"][0], manifest.shards["shard"][1]
    data = bytearray((cache_dir / first).read_bytes())
    data[len(data) // 3] ^= 0xFF
    (cache_dir / first).write_bytes(bytes(data))
    (cache_dir / second).unlink()
    report = verify_cache(copy)
    assert not report.ok
    assert [name for name, _ in report.corrupt] == [first] and report.missing == (second,)


def test_file_sha_in_manifest_is_sha256_of_the_file(manifest):
    row = manifest.shards.row(0, named=True)
    path = manifest.shard_path(row["shard"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    assert path.stat().st_size == row["size_bytes"] and row["size_bytes"] % 10240 == 0


def test_shard_import_does_not_load_torch_15():
    """A no-op `shard` must not pay torch's import (seconds on a 2-core machine): the cache stage never needs it."""
    import subprocess
    import sys

    code = "import sys, lead_stream.cache.shard; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
