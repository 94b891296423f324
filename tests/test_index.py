"""Index build: routes/frames tables, LEAD's route rule and bucket ranges, nulls, incremental, bad input."""

from __future__ import annotations

import json
import lzma
import os
import pickle
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from lead_stream.core import layout
from lead_stream.core.constants import RESULT_INFRACTION_KEYS
from lead_stream.core.errors import LeadFormatError
from lead_stream.index import IndexConfig, build_index, read_bucket_members, table_path
from lead_stream.index.bucket_store import bucket_schema
from lead_stream.index.query import load_tables, run_query
from lead_stream.schemas.tables import (
    FRAMES_SCHEMA,
    INFRACTION_COLUMNS,
    MODALITIES,
    SCHEMA_VERSION,
    SchemaError,
    conform,
)
from lead_stream.sources import Route, route_usability

SERIAL = IndexConfig(workers=1, progress=False)


def _routes(root: Path) -> pl.DataFrame:
    return pl.read_parquet(table_path(root, "routes"))


def _frames(root: Path) -> pl.DataFrame:
    return pl.read_parquet(table_path(root, "frames"))


def _write_meta(path: Path, meta: dict) -> None:
    with lzma.open(path, "wb") as handle:
        pickle.dump(meta, handle)


def _usable_route(root: Path) -> str:
    return _routes(root).filter("usable").sort("route_id")["route_id"][0]


# --- schema -----------------------------------------------------------------------------------------


def test_schema_lists_lead_infraction_keys_and_layout_modalities() -> None:
    assert tuple(f"num_{k}" for k in RESULT_INFRACTION_KEYS) == INFRACTION_COLUMNS
    assert set(MODALITIES) == set(layout.all_modality_dirnames())


def test_conform_rejects_missing_columns_and_bad_casts() -> None:
    with pytest.raises(SchemaError, match="missing columns"):
        conform(pa.table({"route_id": ["a"]}), "bucket_members")
    bad = pa.table({"route_id": ["a"], "frame_idx": ["x"], "bucket": ["b"], "rate": [1.0]})
    with pytest.raises(SchemaError, match="frame_idx"):
        conform(bad, "bucket_members")
    with pytest.raises(SchemaError, match="non-nullable"):
        conform(
            pa.table({"route_id": [None], "frame_idx": [1], "bucket": ["b"], "rate": [1.0]}), "bucket_members"
        )


def test_tables_carry_schema_version_and_exact_schema(indexed_root: Path) -> None:
    for name in ("routes", "pretrain", "posttrain"):
        schema = (
            pq.read_schema(table_path(indexed_root, name))
            if name == "routes"
            else bucket_schema(indexed_root, name)
        )
        assert schema.metadata[b"lead_stream.schema_version"] == str(SCHEMA_VERSION).encode()
    parts = sorted(table_path(indexed_root, "frames").glob("part-*.parquet"))  # frames: a directory of parts
    assert parts
    for part in parts:
        schema = pq.read_schema(part)
        assert schema.metadata[b"lead_stream.schema_version"] == str(SCHEMA_VERSION).encode()
        assert schema.remove_metadata() == FRAMES_SCHEMA


# --- routes and LEAD's rule -------------------------------------------------------------------------


def test_route_usability_reproduces_leads_rule_for_every_route(indexed_root: Path) -> None:
    routes = _routes(indexed_root)
    assert routes.height >= 5 and routes["usable"].sum() == 4  # conftest: 4 usable + rejected ones
    for row in routes.iter_rows(named=True):
        route = Route(indexed_root, row["route_id"])
        assert (row["usable"], row["reason"]) == route_usability(route.results(), route.has_meta0())
        assert row["num_frames"] == route.num_frames()
    rejected = set(routes.filter(~pl.col("usable"))["route_id"])
    for collection in ("pretrain", "posttrain"):
        assert not rejected & set(read_bucket_members(indexed_root, collection)["route_id"])


def test_routes_table_has_results_fields_and_infraction_counts(indexed_root: Path) -> None:
    routes = _routes(indexed_root)
    for row in routes.filter(pl.col("has_results")).iter_rows(named=True):
        results = Route(indexed_root, row["route_id"]).results()
        assert row["status"] == results["status"]
        assert row["score_composed"] == results["scores"]["score_composed"]
        for key in RESULT_INFRACTION_KEYS:
            assert row[f"num_{key}"] == len(results["infractions"].get(key) or [])
    assert routes.filter("usable")["town"].null_count() == 0
    assert routes["fingerprint"].n_unique() == routes.height


# --- buckets ---------------------------------------------------------------------------------------


def test_pretrain_holds_frames_1_to_n_minus_2_of_every_usable_route(indexed_root: Path) -> None:
    members = read_bucket_members(indexed_root, "pretrain")
    usable = _routes(indexed_root).filter("usable")
    assert members.height == int((usable["num_frames"] - 2).sum())
    for route_id, num_frames in usable.select("route_id", "num_frames").iter_rows():
        got = members.filter(pl.col("route_id") == route_id)["frame_idx"].to_list()
        assert got == list(range(1, num_frames - 1))
    assert set(members["rate"]) == {1.0}


def test_posttrain_holds_frames_8_to_n_minus_9_and_never_the_first(indexed_root: Path) -> None:
    members = read_bucket_members(indexed_root, "posttrain")
    usable = _routes(indexed_root).filter("usable")
    assert members.height == int((usable["num_frames"] - 16).sum())
    for route_id, num_frames in usable.select("route_id", "num_frames").iter_rows():
        got = members.filter(pl.col("route_id") == route_id)["frame_idx"].to_list()
        assert got == list(range(8, num_frames - 8))
    assert members.filter(pl.col("frame_idx") == 0).is_empty()
    meta = bucket_schema(indexed_root, "posttrain").metadata
    assert meta[b"lead_stream.lead_name"] == b"full_posttrain_buckets_8_8_8_5"
    assert json.loads(meta[b"lead_stream.params"]) == {
        "num_waypoints": 8,
        "skip_first": 8,
        "skip_last": 8,
        "waypoint_spacing": 5,
    }


# --- frames ----------------------------------------------------------------------------------------


def test_frames_hold_one_row_per_frame_with_scalar_meta(indexed_root: Path) -> None:
    frames = _frames(indexed_root)
    routes = _routes(indexed_root).filter(pl.col("read_error").is_null())
    counts = frames.group_by("route_id").len()
    expected = routes.filter(pl.col("num_frames") > 0).select(
        "route_id", pl.col("num_frames").cast(pl.UInt32)
    )
    assert_frame_equal(counts.sort("route_id"), expected.rename({"num_frames": "len"}).sort("route_id"))
    route_id = _usable_route(indexed_root)
    route = Route(indexed_root, route_id)
    one = frames.filter(pl.col("route_id") == route_id)
    for frame_idx in (0, 5):
        meta, row = route.meta(frame_idx), one.row(frame_idx, named=True)
        assert row["frame_idx"] == frame_idx and row["frames_to_end"] == row["num_frames"] - 1 - frame_idx
        assert row["town"] == meta["town"]
        assert row["speed"] == pytest.approx(float(meta["speed"]))
        assert row["perturbation_translation_m"] == pytest.approx(float(meta["perturbation_translation"]))
        assert row["has_rgb"] and row["has_metas"]
    assert frames.select(pl.selectors.float().is_infinite().any()).row(0) == (False,) * len(
        frames.select(pl.selectors.float()).columns
    )


def test_none_and_inf_meta_become_null_and_extra_keys_are_ignored(copy_lead_root: Path) -> None:
    route_id = _usable_route_from_disk(copy_lead_root)
    route = Route(copy_lead_root, route_id)
    meta = route.meta(3)
    meta.update(
        dist_to_pedestrian=None,
        dist_to_biker=float("inf"),
        route_curvature=float("nan"),
        vehicle_door_side=["right"],
        junction_id=None,
        some_new_key=1.5,
        another={"nested": 1},
    )
    _write_meta(layout.modality_path(route.path, "metas", 3), meta)
    build_index(copy_lead_root, config=SERIAL)
    row = (
        _frames(copy_lead_root)
        .filter((pl.col("route_id") == route_id) & (pl.col("frame_idx") == 3))
        .row(0, named=True)
    )
    assert row["dist_to_pedestrian"] is None and row["dist_to_biker"] is None
    assert row["route_curvature"] is None
    assert row["junction_id"] is None
    assert row["vehicle_door_side"] == "right"
    assert "some_new_key" not in row and "another" not in row


def test_meta_value_of_wrong_type_names_file_and_key(copy_lead_root: Path) -> None:
    route_id = _usable_route_from_disk(copy_lead_root)
    route = Route(copy_lead_root, route_id)
    meta = route.meta(2)
    meta["speed"] = [1.0, 2.0]
    _write_meta(layout.modality_path(route.path, "metas", 2), meta)
    summary = build_index(copy_lead_root, config=SERIAL)
    ((failed, problem),) = summary.failures
    assert failed == route_id and "metas/0002.pkl" in problem and "'speed'" in problem


def _usable_route_from_disk(root: Path) -> str:
    from lead_stream.sources import discover_routes

    return next(r for r in discover_routes(root) if Route(root, r).usability()[0])


# --- incremental -----------------------------------------------------------------------------------


def test_reindex_rereads_only_the_changed_route(copy_lead_root: Path) -> None:
    first = build_index(copy_lead_root, config=SERIAL)
    assert first.num_reread == first.num_routes
    again = build_index(copy_lead_root, config=SERIAL)
    assert again.num_reread == 0 and again.num_frames == first.num_frames
    route_id = _usable_route(copy_lead_root)
    route = Route(copy_lead_root, route_id)
    meta_path = layout.modality_path(route.path, "metas", 4)
    meta = route.meta(4)
    meta["speed"] = 12.5
    _write_meta(meta_path, meta)
    stat = meta_path.stat()
    os.utime(meta_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    # rewritten in place (no folder mtime changes): the per-route stamp cannot see it, --check-files does
    incremental = build_index(copy_lead_root, config=IndexConfig(workers=1, progress=False, check_files=True))
    assert incremental.num_reread == 1
    frames = _frames(copy_lead_root)
    assert frames.filter((pl.col("route_id") == route_id) & (pl.col("frame_idx") == 4))["speed"][0] == 12.5
    full = build_index(copy_lead_root, config=IndexConfig(workers=1, progress=False, force=True))
    assert full.num_reread == full.num_routes
    assert_frame_equal(frames, _frames(copy_lead_root))


def test_parallel_build_equals_serial_build(indexed_root: Path, copy_lead_root: Path) -> None:
    build_index(copy_lead_root, config=IndexConfig(workers=2, progress=False))
    assert_frame_equal(_frames(copy_lead_root), _frames(indexed_root))
    assert_frame_equal(_routes(copy_lead_root).drop("fingerprint"), _routes(indexed_root).drop("fingerprint"))


def test_added_and_removed_routes_are_picked_up(copy_lead_root: Path) -> None:
    build_index(copy_lead_root, config=SERIAL)
    route_id = _usable_route(copy_lead_root)
    source = layout.route_path(copy_lead_root, route_id)
    shutil.copytree(source, source.with_name(source.name + "_copy"))
    summary = build_index(copy_lead_root, config=SERIAL)
    assert summary.num_reread == 1
    shutil.rmtree(source)
    summary = build_index(copy_lead_root, config=SERIAL)
    assert summary.num_reread == 0 and route_id not in set(_frames(copy_lead_root)["route_id"])


def test_failed_write_leaves_previous_index_intact(copy_lead_root: Path, monkeypatch) -> None:
    build_index(copy_lead_root, config=SERIAL)
    before = _frames(copy_lead_root)
    import lead_stream.index.tables as index_module

    def write_half_then_die(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module.pq, "write_table", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_index(copy_lead_root, config=IndexConfig(workers=1, progress=False, force=True))
    monkeypatch.undo()
    assert not list((copy_lead_root / "index").rglob("*.tmp"))
    assert_frame_equal(_frames(copy_lead_root), before)


# --- corrupt input ---------------------------------------------------------------------------------


def test_corrupt_routes_are_recorded_with_named_reasons_and_the_rest_completes(copy_lead_root: Path) -> None:
    from lead_stream.sources import discover_routes

    usable = [r for r in discover_routes(copy_lead_root) if Route(copy_lead_root, r).usability()[0]]
    truncated, bad_json, no_metas = usable[0], usable[1], usable[2]
    meta_path = layout.modality_path(layout.route_path(copy_lead_root, truncated), "metas", 5)
    meta_path.write_bytes(meta_path.read_bytes()[:40])
    (layout.route_path(copy_lead_root, bad_json) / "results.json").write_text("{not json")
    shutil.rmtree(layout.route_path(copy_lead_root, no_metas) / "metas")
    empty = layout.routes_root(copy_lead_root) / "Accident" / "Town01_Rep0_empty_route0_01_01_00_00_00"
    empty.mkdir(parents=True)
    (layout.routes_root(copy_lead_root) / "Accident" / "stray_file.txt").write_text("not a route")

    summary = build_index(copy_lead_root, config=SERIAL)
    failures = dict(summary.failures)
    assert set(failures) == {truncated, bad_json}
    assert "metas/0005.pkl" in failures[truncated] and "truncated" in failures[truncated]
    assert "results.json" in failures[bad_json] and "JSON" in failures[bad_json]
    routes = _routes(copy_lead_root)
    reasons = dict(zip(routes["route_id"], routes["reason"]))
    assert "metas/0000.pkl missing" in reasons[no_metas]
    assert "results.json missing" in reasons["Accident/" + empty.name]
    assert summary.num_usable_routes == 1
    assert set(read_bucket_members(copy_lead_root, "pretrain")["route_id"]) == {usable[3]}

    with pytest.raises(LeadFormatError, match="0005.pkl"):
        build_index(copy_lead_root, config=IndexConfig(workers=1, progress=False, strict=True))


def test_missing_data_folder_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(LeadFormatError, match="data"):
        build_index(tmp_path, config=SERIAL)


# --- query -----------------------------------------------------------------------------------------


def test_polars_sql_over_index_tables(indexed_root: Path) -> None:
    assert set(load_tables(indexed_root)) >= {"frames", "routes", "pretrain", "posttrain"}
    result = run_query(
        indexed_root,
        """
        SELECT f.town, count(*) AS n FROM posttrain p
        JOIN frames f ON p.route_id = f.route_id AND p.frame_idx = f.frame_idx
        GROUP BY f.town ORDER BY f.town""",
    )
    assert int(result["n"].sum()) == read_bucket_members(indexed_root, "posttrain").height
    scanned = pl.scan_parquet(indexed_root / "index" / "frames.parquet").filter(pl.col("usable")).collect()
    assert run_query(indexed_root, "SELECT count(*) AS n FROM frames WHERE usable")["n"][0] == scanned.height
