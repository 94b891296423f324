"""`index --verify-content`: a file rewritten in place with its size kept and its mtime restored is missed by
every stat (the route stamp, `--check-files`); the content hash sees it, re-reads exactly that route, and the
next `shard` rebuilds it from the new bytes (issue 13, point 3)."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import polars as pl
from cli_helpers import run_cli as _cli

from lead_stream.cache.manifest import read_manifest, read_sample_members, resolve_cache_dir
from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.core import layout
from lead_stream.index import IndexConfig, build_index
from lead_stream.index.tables import table_path
from lead_stream.sources.content import content_hash
from lead_stream.sources.stores import FolderStore, ZipStore, open_archive

SERIAL = IndexConfig(workers=1, progress=False)
SHARD = ShardConfig(workers=1, max_samples_per_shard=16, progress=False)


def _rewrite_keeping_size_and_mtime(path: Path) -> bytes:
    """Change the JFIF density fields of a JPEG in place (a valid JPEG, same size), then restore its mtime_ns."""
    before = os.stat(path)
    data = bytearray(path.read_bytes())
    assert data[6:11] == b"JFIF\x00", "the generator's JPEGs start with a JFIF APP0 segment"
    data[13:18] = b"\x01\x00\x48\x00\x48"  # units: dpi, 72 x 72 (was: no units, 1 x 1)
    with open(path, "r+b") as handle:  # in place: no folder mtime changes
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return bytes(data)


def _cached_rgb(root: Path, route_id: str, frame_idx: int) -> bytes:
    cache_dir = resolve_cache_dir(root)
    row = read_manifest(cache_dir).samples.filter(
        (pl.col("route_id") == route_id) & (pl.col("frame_idx") == frame_idx)
    )
    assert row.height == 1
    members = read_sample_members(
        cache_dir / row["shard"][0], int(row["offset"][0]), int(row["size_bytes"][0])
    )
    return members["rgb.jpg"]


def test_verify_content_rereads_exactly_the_route_rewritten_in_place_and_shard_rebuilds_it_13(
    sharded_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "carla_leaderboard2"
    shutil.copytree(sharded_root, root)
    routes = pl.read_parquet(table_path(root, "routes"))
    assert routes["content_hash"].null_count() == routes.height  # a plain build hashes nothing

    # first --verify-content: no stored hash proves any route unchanged, so each is read once and hashed
    first = build_index(root, config=IndexConfig(workers=1, progress=False, verify_content=True))
    assert first.num_reread == routes.height and first.content_changed == ()
    hashes = pl.read_parquet(table_path(root, "routes")).select("route_id", "content_hash")
    assert hashes["content_hash"].null_count() == 0 and hashes["content_hash"].n_unique() == routes.height
    rebuilt = write_shards(root, config=SHARD)  # the cache now compares the hashes too: built once more
    assert rebuilt.num_routes_built == read_manifest(resolve_cache_dir(root)).samples["route_id"].n_unique()
    again = build_index(root, config=IndexConfig(workers=1, progress=False, verify_content=True))
    assert again.num_reread == 0  # hashes equal: nothing re-read, nothing written
    assert write_shards(root, config=SHARD).num_routes_built == 0

    samples = read_manifest(resolve_cache_dir(root)).samples.sort("key")
    route_id, frame_idx = samples["route_id"][0], int(samples["frame_idx"][0])
    rgb = layout.modality_path(layout.route_path(root, route_id), "rgb", frame_idx)
    old_bytes = rgb.read_bytes()
    assert _cached_rgb(root, route_id, frame_idx) == old_bytes
    new_bytes = _rewrite_keeping_size_and_mtime(rgb)
    assert new_bytes != old_bytes

    assert build_index(root, config=SERIAL).num_reread == 0  # the route stamp cannot see it ...
    checked = build_index(root, config=IndexConfig(workers=1, progress=False, check_files=True))
    assert checked.num_reread == 0  # ... nor the per-file size + mtime fingerprint
    after_plain = pl.read_parquet(table_path(root, "routes")).select("route_id", "content_hash")
    assert after_plain.equals(hashes)  # reused routes keep their stored hashes
    assert write_shards(root, config=SHARD).num_routes_built == 0

    done = _cli("index", root, "--verify-content", "--workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"content changed: {route_id}" in done.stdout
    assert "1 read," in done.stdout and "1 changed, 0 hashed for the first time" in done.stdout
    stored = pl.read_parquet(table_path(root, "routes")).select("route_id", "content_hash")
    differs = stored.join(hashes, on="route_id", suffix="_old").filter(
        pl.col("content_hash") != pl.col("content_hash_old")
    )
    assert differs["route_id"].to_list() == [route_id]

    built = write_shards(root, config=SHARD)
    assert built.num_routes_built == 1
    assert _cached_rgb(root, route_id, frame_idx) == new_bytes  # the cache holds the new bytes


def test_a_zipped_route_is_hashed_from_its_central_directory_crcs_13(lead_root: Path, tmp_path: Path) -> None:
    route_dir = next(p.parent for p in sorted((lead_root / "data").glob("*/*/results.json")))
    folder = FolderStore(route_dir)
    route_id = f"{route_dir.parent.name}/{route_dir.name}"
    files = sorted(p for p in route_dir.rglob("*") if p.is_file())

    def zipped(name: str, replace: dict[str, bytes]) -> ZipStore:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for file in files:
                rel = file.relative_to(route_dir).as_posix()
                archive.writestr(f"{route_dir.name}/{rel}", replace.get(rel, file.read_bytes()))
        return ZipStore(open_archive(str(path)), f"{route_dir.name}/")

    same = content_hash(zipped("a.zip", {}), route_id)
    assert content_hash(zipped("b.zip", {}), route_id) == same  # another zip of the same bytes
    rel = "rgb/0003.jpg"
    changed = bytearray((route_dir / rel).read_bytes())
    changed[-3] ^= 0xFF
    assert content_hash(zipped("c.zip", {rel: bytes(changed)}), route_id) != same  # same size, new CRC
    assert content_hash(folder, route_id) != same  # a folder hashes bytes, a zip its CRCs: other kinds
