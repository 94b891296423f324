"""Incremental index and cache (issue 15, and issue 13 point 3): adding, changing and removing a route, and
a no-op, give the same tables, manifests and loader plans as a full rebuild; a no-op writes nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lead_stream.cache.manifest import read_manifest, resolve_cache_dir, verify_cache
from lead_stream.cache.shard import ShardConfig, repair_cache, write_shards
from lead_stream.core import layout
from lead_stream.index import IndexConfig, build_index
from lead_stream.index.bucket_store import read_bucket_members
from lead_stream.index.frame_store import scan_frames
from lead_stream.index.tables import collection_names, table_path
from lead_stream.loader import LoaderConfig, make_loader

SERIAL = IndexConfig(workers=1, progress=False)
SHARD = ShardConfig(workers=1, max_samples_per_shard=16, progress=False)


def _index_tables(root: Path) -> dict[str, pl.DataFrame]:
    tables = {
        "frames": scan_frames(root).collect().sort("route_id", "frame_idx"),
        "routes": pl.read_parquet(table_path(root, "routes")).sort("route_id"),
    }
    for name in collection_names(root):
        tables[name] = read_bucket_members(root, name)
    return tables


def _assert_same_index(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert_frame_equal(a[name], b[name], check_row_order=True)


def _samples(root: Path) -> pl.DataFrame:
    """Manifest samples without what depends on the build order (shard names, offsets)."""
    samples = read_manifest(resolve_cache_dir(root)).samples
    return samples.select("key", "route_id", "frame_idx", "size_bytes", "sha256", "planning_valid").sort(
        "key"
    )


def _plan_keys(root: Path, collection: str = "pretrain") -> tuple[list[str], str]:
    loader = make_loader(root, config=LoaderConfig(batch_size=4, num_workers=0, collection=collection))
    loader.set_epoch(1)
    return [loader.catalog.key(int(r)) for r in loader.plan.rows], loader.plan.fingerprint


def _mtimes(root: Path) -> dict[str, int]:
    """mtime of every index and cache file, the shard lock aside (each run records its holder there)."""
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for folder in ("index", "cache")
        for p in (root / folder).rglob("*")
        if p.is_file() and p.name != ".shard.lock"
    }


def _usable_routes(root: Path) -> list[str]:
    routes = pl.read_parquet(table_path(root, "routes"))
    return sorted(routes.filter(pl.col("usable"))["route_id"].to_list())


def test_index_add_change_remove_equal_a_full_rebuild_and_noop_writes_nothing_15(
    copy_lead_root: Path,
) -> None:
    root = copy_lead_root
    build_index(root, config=SERIAL)
    first = _usable_routes(root)
    before = _mtimes(root)
    summary = build_index(root, config=SERIAL)
    assert summary.num_reread == 0 and _mtimes(root) == before  # no-op: nothing written

    added = layout.routes_root(root) / f"{first[0]}_copy"
    shutil.copytree(layout.route_path(root, first[0]), added)
    shutil.rmtree(layout.route_path(root, first[1]))
    meta = layout.modality_path(layout.route_path(root, first[2]), "metas", 3)
    replacement = meta.with_name("tmp.pkl")
    replacement.write_bytes(layout.modality_path(layout.route_path(root, first[2]), "metas", 4).read_bytes())
    replacement.replace(meta)  # changed by rename, as LEAD's writers and rsync do: the route stamp sees it

    summary = build_index(root, config=SERIAL)
    assert summary.num_reread == 2  # the added and the changed route; the removed one is gone
    incremental = _index_tables(root)
    stored_order = pl.read_parquet(table_path(root, "routes"))  # kept rows taken from the old table
    assert first[1] not in incremental["routes"]["route_id"].to_list()
    build_index(root, config=IndexConfig(workers=1, progress=False, force=True))
    _assert_same_index(incremental, _index_tables(root))
    assert_frame_equal(stored_order, pl.read_parquet(table_path(root, "routes")), check_row_order=True)


def test_index_check_files_sees_a_file_rewritten_in_place_15(copy_lead_root: Path) -> None:
    root = copy_lead_root
    build_index(root, config=SERIAL)
    route = _usable_routes(root)[0]
    fingerprint = pl.read_parquet(table_path(root, "routes")).filter(pl.col("route_id") == route)[
        "fingerprint"
    ][0]
    rgb = layout.modality_path(layout.route_path(root, route), "rgb", 3)
    data = rgb.read_bytes()
    with open(rgb, "r+b") as handle:  # in place: no folder mtime changes
        handle.write(data)
    assert build_index(root, config=SERIAL).num_reread == 0  # the cheap route stamp cannot see it ...
    summary = build_index(root, config=IndexConfig(workers=1, progress=False, check_files=True))
    assert summary.num_reread == 1  # ... the per-file fingerprint does
    after = pl.read_parquet(table_path(root, "routes")).filter(pl.col("route_id") == route)["fingerprint"][0]
    assert after != fingerprint


def test_old_single_file_frames_table_is_read_and_migrated_15(copy_lead_root: Path) -> None:
    root = copy_lead_root
    build_index(root, config=SERIAL)
    tables = _index_tables(root)
    frames_dir = table_path(root, "frames")
    single = scan_frames(root).collect().to_arrow()
    import pyarrow.parquet as pq

    from lead_stream.schemas.tables import BUILD_ID_KEY, conform

    routes = pq.read_table(table_path(root, "routes"))
    single = conform(single, "frames", metadata={BUILD_ID_KEY: routes.schema.metadata[BUILD_ID_KEY]})
    shutil.rmtree(frames_dir)
    (root / "index" / "frame_parts.parquet").unlink()
    pq.write_table(single, frames_dir)  # the layout before issue 15
    assert_frame_equal(scan_frames(root).collect().sort("route_id", "frame_idx"), tables["frames"])
    assert build_index(root, config=SERIAL).num_reread == 0  # a no-op leaves it as it is
    route = _usable_routes(root)[0]
    results = layout.route_path(root, route) / "results.json"
    results.with_name("tmp.json").write_bytes(results.read_bytes())
    results.with_name("tmp.json").replace(results)  # one route changes: the next build migrates
    with pytest.warns(UserWarning, match="migrating the frames table"):
        summary = build_index(root, config=SERIAL)
    assert summary.num_reread == 1 and frames_dir.is_dir()
    migrated = _index_tables(root)
    _assert_same_index(tables, {**migrated, "routes": tables["routes"]})  # same rows (stamps differ)
    build_index(root, config=IndexConfig(workers=1, progress=False, force=True))
    _assert_same_index(migrated, _index_tables(root))


def test_cache_remove_add_change_and_noop_equal_a_full_build_15(sharded_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(sharded_root, root)
    full_samples, full_plan = _samples(sharded_root), _plan_keys(sharded_root)
    route = _usable_routes(root)[1]

    before = _mtimes(root)
    assert write_shards(root, config=SHARD).num_routes_built == 0
    assert _mtimes(root) == before  # no-op: nothing written

    shutil.move(layout.route_path(root, route), tmp_path / "parked")  # remove a route
    build_index(root, config=SERIAL)
    removed = write_shards(root, config=SHARD)
    assert removed.num_routes_built == 0
    assert route not in set(_samples(root)["route_id"])
    assert_frame_equal(_samples(root), full_samples.filter(pl.col("route_id") != route))

    shutil.move(tmp_path / "parked", layout.route_path(root, route))  # add it back (a new route to the cache)
    build_index(root, config=SERIAL)
    assert write_shards(root, config=SHARD).num_routes_built == 1
    assert_frame_equal(_samples(root), full_samples)
    assert _plan_keys(root) == full_plan

    rgb = layout.modality_path(layout.route_path(root, route), "rgb", 5)  # change in place, same bytes
    with open(rgb, "r+b") as handle:
        handle.write(rgb.read_bytes())
    build_index(root, config=IndexConfig(workers=1, progress=False, check_files=True))
    assert write_shards(root, config=SHARD).num_routes_built == 1
    assert_frame_equal(_samples(root), full_samples)
    assert _plan_keys(root) == full_plan
    assert _plan_keys(root, "posttrain") == _plan_keys(sharded_root, "posttrain")
    assert verify_cache(root).ok


def test_corrupt_shard_is_rebuilt_by_repair_and_failed_frames_by_retry_failed_15(
    sharded_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(sharded_root, root)
    cache_dir = resolve_cache_dir(root)
    shard = sorted(cache_dir.glob("shard-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = verify_cache(root)
    assert [name for name, _ in report.corrupt] == [shard.name]
    repaired = repair_cache(cache_dir)
    assert repaired.num_routes_built == 1
    assert verify_cache(root).ok
    assert_frame_equal(_samples(root), _samples(sharded_root))

    route = _usable_routes(root)[0]
    lidar = layout.modality_path(layout.route_path(root, route), "lidar", 4)
    good = lidar.read_bytes()
    lidar.write_bytes(good[:100])  # a bad file: the frame fails
    build_index(root, config=IndexConfig(workers=1, progress=False, check_files=True))
    assert write_shards(root, config=SHARD).num_failures == 1
    with open(lidar, "r+b") as handle:  # repaired in place (index not rerun)
        handle.write(good)
    assert write_shards(root, config=SHARD).num_failures == 1  # kept until asked ...
    retried = write_shards(
        root, config=ShardConfig(workers=1, max_samples_per_shard=16, progress=False, retry_failed=True)
    )
    assert retried.num_failures == 0 and retried.num_routes_built == 1


def _bucket_parts(root: Path) -> dict[str, int]:
    """mtime of every bucket part, by collection/part."""
    return {
        f"{d.name}/{p.name}": p.stat().st_mtime_ns
        for d in sorted((root / "index" / "buckets").iterdir())
        for p in sorted(d.glob("part-*.parquet"))
    }


def test_bucket_parts_follow_the_frame_parts_and_equal_a_full_rebuild_15(
    copy_lead_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lead_stream.index import frame_store

    monkeypatch.setattr(frame_store, "FRAMES_PART_ROWS", 24)  # a route or two per part: many parts
    root = copy_lead_root
    build_index(root, config=SERIAL)
    frame_parts = sorted(p.name for p in table_path(root, "frames").glob("part-*.parquet"))
    assert len(frame_parts) >= 3
    for name in collection_names(root):  # one bucket part per frames part, same name
        assert sorted(p.name for p in table_path(root, name).glob("*.parquet")) == frame_parts
    before = _bucket_parts(root)

    routes = _usable_routes(root)
    shutil.copytree(layout.route_path(root, routes[0]), layout.routes_root(root) / f"{routes[0]}_copy")
    results = layout.route_path(root, routes[-1]) / "results.json"
    results.with_name("tmp.json").write_bytes(results.read_bytes())
    results.with_name("tmp.json").replace(results)  # changed (by rename)
    summary = build_index(root, config=SERIAL)
    assert summary.num_reread == 2
    after = _bucket_parts(root)
    kept = {k: v for k, v in after.items() if k in before}
    assert kept and kept == {k: before[k] for k in kept}  # untouched frames parts: bucket parts not rewritten
    assert len(after) - len(kept) < len(after) / 2  # only the rewritten frames parts were derived again
    incremental = _index_tables(root)
    assert (incremental["town13_heldout_pretrain"]["rate"] > 0).any()  # fill rates computed over all parts

    shutil.rmtree(layout.route_path(root, routes[1]))  # removed
    assert build_index(root, config=SERIAL).num_reread == 0
    incremental = _index_tables(root)
    build_index(root, config=IndexConfig(workers=1, progress=False, force=True))
    _assert_same_index(incremental, _index_tables(root))
    monkeypatch.setattr(frame_store, "FRAMES_PART_ROWS", 1 << 16)
    build_index(root, config=IndexConfig(workers=1, progress=False, force=True))  # one part: same tables
    _assert_same_index(incremental, _index_tables(root))


def test_old_single_file_bucket_tables_are_read_and_migrated_15(copy_lead_root: Path) -> None:
    import pyarrow.parquet as pq

    from lead_stream.schemas.tables import conform

    root = copy_lead_root
    build_index(root, config=SERIAL)
    tables = _index_tables(root)
    for name in collection_names(root):  # the layout before bucket parts: one file, every rate stored
        path = table_path(root, name)
        stored = pq.read_schema(next(path.glob("*.parquet"))).metadata
        metadata = {k: v for k, v in stored.items() if k.startswith(b"lead_stream.") and b"table" not in k}
        shutil.rmtree(path)
        pq.write_table(conform(tables[name].to_arrow(), "bucket_members", metadata=metadata), path)
    _assert_same_index(tables, _index_tables(root))  # read as is
    assert build_index(root, config=SERIAL).num_reread == 0  # a no-op leaves them
    assert table_path(root, "pretrain").is_file()
    results = layout.route_path(root, _usable_routes(root)[0]) / "results.json"
    results.with_name("tmp.json").write_bytes(results.read_bytes())
    results.with_name("tmp.json").replace(results)
    with pytest.warns(UserWarning, match="migrating the bucket table to parts"):
        build_index(root, config=SERIAL)
    assert all(table_path(root, name).is_dir() for name in collection_names(root))
    migrated = _index_tables(root)
    _assert_same_index({**tables, "routes": migrated["routes"]}, migrated)  # same rows (the stamp changed)


def test_shard_after_an_index_rewrite_plans_once_then_reads_only_metadata_15(
    sharded_root: Path, tmp_path: Path
) -> None:
    from lead_stream.cache.unchanged import CHECKED_FILENAME, checked_stamps

    root = tmp_path / "root"
    shutil.copytree(sharded_root, root)
    cache_dir = resolve_cache_dir(root)
    manifest_bytes = (cache_dir / "manifest.json").read_bytes()
    build_index(root, config=IndexConfig(workers=1, progress=False, force=True))  # same content, new files
    assert write_shards(root, config=SHARD).num_routes_built == 0  # planned: nothing changed ...
    assert (cache_dir / "manifest.json").read_bytes() == manifest_bytes  # ... the manifest is kept
    assert checked_stamps(cache_dir) is not None  # and the new stamps are recorded

    bucket = sorted(table_path(root, "pretrain").glob("part-*.parquet"))[
        0
    ]  # unreadable, same size and mtime:
    stat = bucket.stat()  # only a planning run reads it
    bucket.write_bytes(b"\0" * stat.st_size)
    os.utime(bucket, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = _mtimes(root)
    assert write_shards(root, config=SHARD).num_routes_built == 0
    assert _mtimes(root) == before  # metadata-only no-op: nothing read but stamps and small tables

    build_index(root, config=IndexConfig(workers=1, progress=False, force=True))  # the table back
    route = _usable_routes(root)[0]
    rgb = layout.modality_path(layout.route_path(root, route), "rgb", 5)  # a changed route is no no-op
    with open(rgb, "r+b") as handle:
        handle.write(rgb.read_bytes())
    build_index(root, config=IndexConfig(workers=1, progress=False, check_files=True))
    assert write_shards(root, config=SHARD).num_routes_built == 1
    assert checked_stamps(cache_dir) is None and not (cache_dir / CHECKED_FILENAME).exists()
    assert_frame_equal(_samples(root), _samples(sharded_root))


def test_a_deleted_or_resized_shard_is_rebuilt_by_the_next_shard_15(
    sharded_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(sharded_root, root)
    cache_dir = resolve_cache_dir(root)
    sorted(cache_dir.glob("shard-*.tar"))[0].unlink()
    assert write_shards(root, config=SHARD).num_routes_built == 1
    with open(sorted(cache_dir.glob("shard-*.tar"))[0], "ab") as handle:
        handle.write(b"\0" * 512)
    assert write_shards(root, config=SHARD).num_routes_built == 1
    assert verify_cache(root).ok
    assert_frame_equal(_samples(root), _samples(sharded_root))
