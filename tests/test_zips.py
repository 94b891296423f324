"""Routes read in place from zips (issue 12): LEAD's released layout, other member prefixes, copies that are
extracted and zipped, damaged zips, central-directory fingerprints, and caches byte-identical to the
extracted tree's."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import run_cli as _cli
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.cli.main import app
from lead_stream.core import layout
from lead_stream.core.errors import LeadFormatError
from lead_stream.index import IndexConfig, build_index
from lead_stream.sources import Route, discover_routes, discover_sources
from lead_stream.sources.byte_sources import LocalFile
from lead_stream.sources.zips import ZipArchive
from lead_stream.synthetic import write_synthetic_lead, zip_route, zip_routes

INDEX = IndexConfig(workers=1, progress=False)


SHARDS = ShardConfig(workers=1, max_samples_per_shard=16, progress=False)  # = conftest.sharded_root's


@pytest.fixture(scope="module")
def zipped_root(lead_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`lead_root` as LEAD releases it: zip/<Scenario>/<route>.zip only, then indexed and sharded."""
    root = tmp_path_factory.mktemp("zipped") / "carla_leaderboard2"
    shutil.copytree(lead_root, root, ignore=shutil.ignore_patterns("index", "cache"))
    zip_routes(root, discover_routes(root))
    build_index(root, config=INDEX)
    write_shards(root, config=SHARDS)
    return root


def _cache_dir(root: Path) -> Path:
    (manifest,) = (root / "cache").glob("*/manifest.json")
    return manifest.parent


def test_released_zip_layout_is_indexed_in_place_12(zipped_root: Path, indexed_root: Path) -> None:
    assert not (zipped_root / "data").exists() and (zipped_root / "zip").is_dir()
    routes = pl.read_parquet(zipped_root / "index" / "routes.parquet")
    assert routes["source_kind"].unique().to_list() == ["zip"]
    for row in routes.iter_rows(named=True):
        scenario, route_dir = row["route_id"].split("/")
        assert (
            row["source"]
            == f"zip/{scenario}/{route_dir}.zip!data/carla_leaderboard2/data/{scenario}/{route_dir}/"
        )
    extracted = pl.read_parquet(indexed_root / "index" / "routes.parquet")
    keep = [c for c in routes.columns if c not in ("source", "source_kind", "fingerprint", "stat_stamp")]
    assert_frame_equal(routes.select(keep), extracted.select(keep))
    assert_frame_equal(
        pl.read_parquet(zipped_root / "index" / "frames.parquet"),
        pl.read_parquet(indexed_root / "index" / "frames.parquet"),
    )


def test_cache_from_zips_is_byte_identical_to_the_extracted_trees_12(
    zipped_root: Path, sharded_root: Path
) -> None:
    ours, theirs = _cache_dir(zipped_root), _cache_dir(sharded_root)
    assert ours.name == theirs.name  # same pipeline id
    tars = sorted(p.name for p in theirs.glob("shard-*.tar"))
    assert tars and tars == sorted(p.name for p in ours.glob("shard-*.tar"))
    for name in tars:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    samples = [pl.read_parquet(d / "samples.parquet").drop("route_fingerprint") for d in (ours, theirs)]
    assert_frame_equal(*samples)  # only the fingerprints differ: stat-based vs central directory


def _zip_with_prefix(route_dir: Path, target: Path, prefix: str, method: int = zipfile.ZIP_DEFLATED) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=method) as archive:
        for path in sorted(route_dir.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(route_dir).as_posix())
    return target


def test_each_member_prefix_form_and_location_is_found_12(lead_root: Path, tmp_path: Path) -> None:
    route_ids = discover_routes(lead_root)[:3]
    root = tmp_path / "carla_leaderboard2"
    forms = ["data/carla_leaderboard2/data/{s}/{r}/", "{s}/{r}/", "{r}/"]
    places = ["zip/{s}/{r}.zip", "downloads/part1/{s}/anything.zip", "data/{s}/{r}.zip"]
    for route_id, form, place in zip(route_ids, forms, places, strict=True):
        s, r = route_id.split("/")
        _zip_with_prefix(
            layout.route_path(lead_root, route_id), root / place.format(s=s, r=r), form.format(s=s, r=r)
        )
    found = discover_sources(root)
    assert sorted(found) == sorted(route_ids)
    for route_id in route_ids:
        zipped, extracted = Route(root, route_id, source=found[route_id][0]), Route(lead_root, route_id)
        assert zipped.store.kind == "zip" and zipped.num_frames() == extracted.num_frames()
        assert zipped.file_bytes("metas", 3) == extracted.file_bytes("metas", 3)
        assert zipped.meta(3)["speed"] == extracted.meta(3)["speed"] and zipped.rgb_jpeg(
            2
        ) == extracted.rgb_jpeg(2)
        assert (zipped.lidar(1) == extracted.lidar(1)).all() and zipped.modalities() == extracted.modalities()
    assert Route(root, route_ids[0]).store.kind == "zip"  # without a source: found below the data root


def test_a_route_both_extracted_and_zipped_is_one_route_12(copy_lead_root: Path) -> None:
    route_id = discover_routes(copy_lead_root)[0]
    zip_route(copy_lead_root, route_id)  # the extracted folder stays, as after LEAD's unzip_routes.sh
    build_index(copy_lead_root, config=INDEX)
    routes = pl.read_parquet(copy_lead_root / "index" / "routes.parquet")
    assert routes.height == len(discover_routes(copy_lead_root)) == routes["route_id"].n_unique()
    row = routes.filter(pl.col("route_id") == route_id).row(0, named=True)
    assert row["num_sources"] == 2 and row["source_kind"] == "folder" and row["read_error"] is None


def test_copies_that_differ_are_a_named_unreadable_route_12(copy_lead_root: Path) -> None:
    route_id = discover_routes(copy_lead_root)[0]
    zip_file = zip_route(copy_lead_root, route_id)
    meta = layout.modality_path(layout.route_path(copy_lead_root, route_id), "metas", 2)
    meta.write_bytes(meta.read_bytes() + b"\0")  # the extracted copy was changed after zipping
    summary = build_index(copy_lead_root, config=INDEX)
    row = pl.read_parquet(copy_lead_root / "index" / "routes.parquet").filter(pl.col("route_id") == route_id)
    assert not row["usable"][0] and "metas/0002.pkl" in row["read_error"][0]
    assert zip_file.name in row["read_error"][0] and "differs from the copy at" in row["read_error"][0]
    assert [rid for rid, _ in summary.failures] == [route_id]
    with pytest.raises(LeadFormatError, match="differs from the copy"):
        build_index(copy_lead_root, config=IndexConfig(workers=1, progress=False, strict=True, force=True))


def test_copies_with_same_sizes_but_other_labels_are_a_named_unreadable_route_12(
    copy_lead_root: Path,
) -> None:
    route_id = next(r for r in discover_routes(copy_lead_root) if Route(copy_lead_root, r).usability()[0])
    zip_route(copy_lead_root, route_id)
    box = layout.modality_path(layout.route_path(copy_lead_root, route_id), "bboxes", 3)
    payload = bytearray(box.read_bytes())
    payload[-1] ^= 0x01  # same size, other bytes (a bit flipped on one copy)
    box.write_bytes(bytes(payload))
    build_index(copy_lead_root, config=INDEX)
    row = pl.read_parquet(copy_lead_root / "index" / "routes.parquet").filter(pl.col("route_id") == route_id)
    assert not row["usable"][0] and "differs from the copy at" in row["read_error"][0]
    assert "bboxes/0003.pkl has other bytes here (same size)" in row["read_error"][0]


def test_a_truncated_zip_is_a_named_skipped_route_12(lead_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "carla_leaderboard2"
    shutil.copytree(lead_root, root, ignore=shutil.ignore_patterns("index", "cache"))
    route_ids = discover_routes(root)
    zips = zip_routes(root, route_ids)
    zips[1].write_bytes(zips[1].read_bytes()[: zips[1].stat().st_size // 2])  # a download cut short
    summary = build_index(root, config=INDEX)
    routes = pl.read_parquet(root / "index" / "routes.parquet")
    assert routes.height == len(route_ids)
    bad = routes.filter(pl.col("route_id") == route_ids[1]).row(0, named=True)
    assert not bad["usable"] and bad["read_error"].startswith(
        f"zip/{route_ids[1]}.zip: not a zip or truncated"
    )
    assert routes.filter(pl.col("read_error").is_null()).height == len(route_ids) - 1
    assert summary.failures and summary.failures[0][0] == route_ids[1]
    done = _cli("index", root, "--strict", "--no-progress", "--workers", "1", "--force")
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert f"{route_ids[1]}.zip" in done.stderr and "truncated" in done.stderr


def test_a_bad_crc_names_the_zip_member_12(lead_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "carla_leaderboard2"
    route_id = next(r for r in discover_routes(lead_root) if Route(lead_root, r).usability()[0])
    s, r = route_id.split("/")
    target = _zip_with_prefix(
        layout.route_path(lead_root, route_id), root / "zip" / s / f"{r}.zip", f"{s}/{r}/", zipfile.ZIP_STORED
    )
    archive = ZipArchive(LocalFile(target))
    member = archive.members[f"{s}/{r}/metas/0004.pkl"]
    payload = bytearray(target.read_bytes())
    payload[member.offset + 30 + len(member.name) + 40] ^= 0xFF  # one flipped bit inside the stored data
    target.write_bytes(bytes(payload))
    build_index(root, config=INDEX)
    row = pl.read_parquet(root / "index" / "routes.parquet").row(0, named=True)
    assert not row["usable"] and row["read_error"].startswith(
        f"zip/{s}/{r}.zip/{s}/{r}/metas/0004.pkl: bad CRC-32"
    )


def test_a_damaged_sensor_member_fails_only_its_frame_12(lead_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "carla_leaderboard2"
    route_id = next(r for r in discover_routes(lead_root) if Route(lead_root, r).usability()[0])
    s, r = route_id.split("/")
    target = _zip_with_prefix(
        layout.route_path(lead_root, route_id), root / "zip" / s / f"{r}.zip", f"{s}/{r}/"
    )
    member = ZipArchive(LocalFile(target)).members[f"{s}/{r}/semantics/0005.png"]
    payload = bytearray(target.read_bytes())
    start = member.offset + 30 + len(member.name)
    payload[start + 10 : start + 14] = b"\xff\xff\xff\xff"
    target.write_bytes(bytes(payload))
    build_index(root, config=INDEX)
    summary = write_shards(root, config=SHARDS)
    failures = pl.read_parquet(summary.cache_dir / "failures.parquet")
    assert (
        failures["frame_idx"].to_list() == [5]
        and failures["file"][0] == f"zip/{s}/{r}.zip/{s}/{r}/semantics/0005.png"
    )
    frames = pl.concat(
        [pl.read_parquet(root / "index" / "buckets" / f"{c}.parquet") for c in SHARDS.collections]
    )
    assert summary.num_samples == frames.select("route_id", "frame_idx").unique().height - 1


def test_zipped_route_fingerprint_comes_from_its_central_directory_12(
    lead_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "carla_leaderboard2"
    shutil.copytree(lead_root, root, ignore=shutil.ignore_patterns("index", "cache"))
    route_ids = discover_routes(root)
    zips = zip_routes(root, route_ids)
    build_index(root, config=INDEX)
    first = write_shards(root, config=SHARDS)
    before = pl.read_parquet(root / "index" / "routes.parquet")
    assert build_index(root, config=INDEX).num_reread == 0  # unchanged zips: one stat each
    zips[0].write_bytes(zips[0].read_bytes())  # rewritten, same content: a new mtime, the same directory
    again = build_index(root, config=INDEX)
    assert again.num_reread == 1
    after = pl.read_parquet(root / "index" / "routes.parquet")
    assert_frame_equal(before.select("route_id", "fingerprint"), after.select("route_id", "fingerprint"))
    rebuilt = write_shards(root, config=SHARDS)
    assert rebuilt.num_routes_built == 0 and rebuilt.num_routes_reused == first.num_routes_built
    extracted = tmp_path / "extracted"
    write_synthetic_lead(extracted, num_routes=1, num_frames=6, seed=9, num_rejected=0)
    (changed,) = discover_routes(extracted)
    shutil.copy(zip_route(extracted, changed), zips[0])  # other content under the same file name
    build_index(root, config=INDEX)
    changed_rows = pl.read_parquet(root / "index" / "routes.parquet")
    assert changed not in before["route_id"].to_list() and changed in changed_rows["route_id"].to_list()
    assert route_ids[0] not in changed_rows["route_id"].to_list()


def test_synth_zip_cli_writes_the_released_layout_in_both_schemas_12(tmp_path: Path) -> None:
    runner = CliRunner()
    for version in ("legacy", "current"):
        root = tmp_path / version / "carla_leaderboard2"
        args = ["synth", str(root), "--routes", "1", "--frames", "6", "--rejected", "0", "--workers", "1"]
        result = runner.invoke(app, [*args, "--zip", "--lead-version", version])
        assert result.exit_code == 0, result.output
        assert f"{version} LEAD schema, zipped" in result.output and not (root / "data").exists()
        (zip_file,) = (root / "zip").glob("*/*.zip")
        names = zipfile.ZipFile(zip_file).namelist()
        files = [n for n in names if not n.endswith("/")]  # plus zip -r's folder entries
        assert files and all(n.startswith("data/carla_leaderboard2/data/") for n in files)
        result = runner.invoke(app, ["index", str(root), "--no-progress", "--workers", "1"])
        assert result.exit_code == 0, result.output
        routes = pl.read_parquet(root / "index" / "routes.parquet")
        assert routes["lead_schema"].to_list() == [version] and routes[
            "depth_resolution_ratio"
        ].to_list() == [4]
    bad = _cli("synth", tmp_path / "x", "--lead-version", "2019")
    assert bad.returncode == 2 and "--lead-version" in bad.stderr


def test_show_renders_a_sample_of_zipped_routes_as_of_extracted_ones_12(
    zipped_root: Path, sharded_root: Path, tmp_path: Path
) -> None:
    key = pl.read_parquet(_cache_dir(zipped_root) / "samples.parquet")["key"][3]
    pngs = []
    for root in (zipped_root, sharded_root):
        out = tmp_path / f"{root.parent.name}.png"
        result = CliRunner().invoke(app, ["show", key, "--out", str(out), "--root", str(root)])
        assert result.exit_code == 0, result.output
        pngs.append(out.read_bytes())
    assert pngs[0] == pngs[1]


def test_zip64_archives_and_prefixed_stubs_are_read_in_place_12(tmp_path: Path) -> None:
    target = tmp_path / "big.zip"
    count = 0x10000 + 5  # more members than a plain end-of-central-directory record can count
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        with archive.open("r/metas/0000.pkl", "w", force_zip64=True) as member:  # ZIP64 extra fields
            member.write(b"meta bytes" * 100)
        for i in range(count - 1):
            archive.writestr(f"r/x/{i:06d}", b"")
    assert b"PK\x06\x06" in target.read_bytes()[-200:]  # zipfile wrote the ZIP64 end record
    archive = ZipArchive(LocalFile(target))
    assert len(archive.members) == count and archive.read("r/metas/0000.pkl") == b"meta bytes" * 100
    stub = tmp_path / "stub.zip"  # a self-extracting stub before the archive shifts every offset
    stub.write_bytes(b"#!stub\n" * 50 + target.read_bytes())
    assert ZipArchive(LocalFile(stub)).read("r/metas/0000.pkl") == b"meta bytes" * 100
