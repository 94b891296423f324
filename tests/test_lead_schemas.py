"""Both LEAD meta schemas read with their own meaning, and LEAD's five bucket collections (issue 12)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lead_stream.cache.frame import load_frame
from lead_stream.cache.labels import box_labels
from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.core.constants import META_KEYS_REMOVED_IN_CURRENT, MOTORCYCLE_MESHES, BoxClass, BoxField
from lead_stream.core.errors import LeadFormatError
from lead_stream.index import IndexConfig, build_index, read_bucket_members
from lead_stream.index.buckets import epoch_size
from lead_stream.index.query import bucket_report, run_query
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.sources import Route, discover_routes, lead_schema_of
from lead_stream.sources.lead_schema import depth_resolution_ratio, filtered_gnss_position, target_dataset

INDEX = IndexConfig(workers=1, progress=False)
COLLECTIONS = ("pretrain", "posttrain", "town13_heldout_pretrain", "town13_heldout_posttrain", "failed")


@pytest.fixture(scope="module")
def legacy_indexed(legacy_root: Path) -> Path:
    build_index(legacy_root, config=INDEX)
    return legacy_root


def test_routes_record_the_lead_schema_and_depth_ratio_12(indexed_root: Path, legacy_indexed: Path) -> None:
    for root, schema in ((indexed_root, "current"), (legacy_indexed, "legacy")):
        routes = pl.read_parquet(root / "index" / "routes.parquet").filter(pl.col("num_metas") > 0)
        assert routes["lead_schema"].unique().to_list() == [schema]
        assert routes["depth_resolution_ratio"].unique().to_list() == [4]
    unfinished = pl.read_parquet(indexed_root / "index" / "routes.parquet").filter(pl.col("num_metas") == 0)
    assert unfinished.height and unfinished["lead_schema"].null_count() == unfinished.height


def test_each_schema_is_read_with_its_meaning_12(indexed_root: Path, legacy_indexed: Path) -> None:
    current = pl.read_parquet(indexed_root / "index" / "frames.parquet").filter(pl.col("speed").is_not_null())
    legacy = pl.read_parquet(legacy_indexed / "index" / "frames.parquet").filter(
        pl.col("speed").is_not_null()
    )
    # target_dataset moved into dataset_information: the same column, the same meaning
    assert current["target_dataset"].unique().to_list() == legacy["target_dataset"].unique().to_list() == [1]
    assert current["depth_resolution_ratio"].unique().to_list() == [4] and current[
        "depth_bits"
    ].unique().to_list() == [8]
    assert current["num_cameras"].unique().to_list() == [3] and current[
        "data_save_freq"
    ].unique().to_list() == [5]
    assert legacy["depth_resolution_ratio"].null_count() == legacy.height  # legacy metas have no such dict
    for key in META_KEYS_REMOVED_IN_CURRENT:  # keys current LEAD dropped are null, not guessed
        assert current[key].null_count() == current.height
    assert legacy["reduce_speed_high_route_curvature"].null_count() == 0
    route = Route(indexed_root, current["route_id"][0])
    meta = route.meta(2)
    assert lead_schema_of(meta) == "current" and target_dataset(meta) == 1
    assert filtered_gnss_position(meta) == meta["filtered_pos_global"] != meta["noisy_pos_global"]
    old = Route(legacy_indexed, legacy["route_id"][0]).meta(2)
    assert lead_schema_of(old) == "legacy" and filtered_gnss_position(old) == old["noisy_pos_global"]


def test_depth_ratio_comes_from_the_meta_12(copy_lead_root: Path) -> None:
    route_id = next(r for r in discover_routes(copy_lead_root) if Route(copy_lead_root, r).usability()[0])
    route = Route(copy_lead_root, route_id)
    meta = route.meta(3)
    assert depth_resolution_ratio(meta) == 4 and route.depth_m(3).shape == (96, 288)
    assert depth_resolution_ratio({}) == 4  # legacy: always a quarter of the camera resolution
    with pytest.raises(LeadFormatError, match="expected shape \\(192, 576\\)"):
        route.depth_m(3, resolution_ratio=2)  # a meta saying 2 needs a 192 x 576 PNG
    with pytest.raises(ValueError, match="save_depth_resolution_ratio"):
        depth_resolution_ratio({"dataset_information": {"save_depth_resolution_ratio": 2.5}})
    inputs = load_frame(route, 3)  # ratio 4 from the meta: read as is
    assert inputs.normal.depth_m.shape == (96, 288)


def _motorcycle(meta: dict) -> int:
    box = {
        "class": "car",
        "extent": [0.9, 0.4, 0.8],
        "position": [12.0, 1.0, 0.0],
        "yaw": 0.1,
        "speed": 4.0,
        "brake": 0.0,
        "id": 9,
        "num_points": 30,
        "visible_pixels": 30,
        "num_radar_points": 1,
        "transfuser_semantics_id": 1,
        "type_id": MOTORCYCLE_MESHES[1],
        "role_name": "background",
    }
    return int(box_labels([box], meta, translation_m=0.0, rotation_deg=0.0)[0, BoxField.CLASS])


def test_motorcycles_are_vehicles_in_current_metas_and_bikers_in_legacy_ones_12() -> None:
    assert _motorcycle({"dataset_information": {}}) == BoxClass.VEHICLE
    assert _motorcycle({}) == BoxClass.BIKER


def test_index_writes_leads_five_collections_12(indexed_root: Path) -> None:
    buckets = indexed_root / "index" / "buckets"
    assert sorted(p.stem for p in buckets.glob("*.parquet")) == sorted(COLLECTIONS)
    frames = pl.read_parquet(indexed_root / "index" / "frames.parquet")
    routes = pl.read_parquet(indexed_root / "index" / "routes.parquet")
    failed = read_bucket_members(indexed_root, "failed")
    failed_routes = routes.filter(pl.col("completed_but_failed"))["route_id"].to_list()
    statuses = routes.filter(pl.col("completed_but_failed"))["status"].to_list()
    assert failed_routes and statuses == ["Completed"]  # the synthetic collision route (crashes are excluded)
    expected = frames.filter(
        pl.col("route_id").is_in(failed_routes)
        & (pl.col("frames_from_start") >= 1)
        & (pl.col("frames_to_end") >= 1)
    )
    assert failed.select("route_id", "frame_idx").equals(expected.select("route_id", "frame_idx"))
    for phase in ("pretrain", "posttrain"):
        held = read_bucket_members(indexed_root, f"town13_heldout_{phase}")
        plain = read_bucket_members(indexed_root, phase)
        assert held.select("route_id", "frame_idx").equals(
            plain.select("route_id", "frame_idx")
        )  # same frames
        town13 = held.filter(pl.col("bucket") == "town13")
        assert town13["route_id"].str.contains("Town13").all() and (town13["rate"] == 0.0).all()
        other = held.filter(pl.col("bucket") == "other_towns")
        assert (
            other.height and (other["rate"] == held.height / other.height).all()
        )  # LEAD: total / len(other)
        assert epoch_size(held) == held.height


def test_collections_are_tables_in_query_and_buckets_12(indexed_root: Path) -> None:
    counts = run_query(
        indexed_root, "SELECT bucket, count(*) AS n FROM town13_heldout_pretrain GROUP BY bucket"
    )
    assert set(counts["bucket"].to_list()) <= {"town13", "other_towns"} and counts["n"].sum() > 0
    assert run_query(indexed_root, "SELECT count(*) AS n FROM failed")["n"][0] > 0
    report = bucket_report(indexed_root, ["failed", "town13_heldout_posttrain"], ("town",))
    assert report["buckets"].height >= 2


def test_train_loader_selects_a_lead_collection_by_name_12(copy_lead_root: Path) -> None:
    build_index(copy_lead_root, config=INDEX)
    write_shards(copy_lead_root, config=ShardConfig(workers=1, progress=False, collections=COLLECTIONS))
    members = pl.read_parquet(copy_lead_root / "index" / "buckets" / "failed.parquet")
    loader = make_loader(
        copy_lead_root, config=LoaderConfig(batch_size=2, num_workers=0, collection="failed", epoch_size=0)
    )
    seen = {(rid, int(f)) for batch in loader for rid, f in zip(batch.route_id, batch.frame_idx.tolist())}
    assert seen == set(members.select("route_id", "frame_idx").iter_rows())
    held = make_loader(
        copy_lead_root,
        config=LoaderConfig(batch_size=2, num_workers=0, collection="town13_heldout_pretrain", epoch_size=0),
    )
    routes = {rid for batch in held for rid in batch.route_id}
    assert routes and not any("Town13" in rid for rid in routes)
    size = epoch_size(read_bucket_members(copy_lead_root, "town13_heldout_pretrain"))  # fill rates computed
    assert len(held) == -(-size // 2)  # LEAD's epoch: the other towns resampled up to the collection's size
