"""Bucket collections as Polars expressions: LEAD's ranges, first-match buckets, rates, user collections."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from lead_stream.core.errors import ConfigError
from lead_stream.index import (
    IndexConfig,
    build_index,
    read_bucket_members,
    read_collection,
    write_bucket_collection,
)
from lead_stream.index.buckets import (
    RATE_FILL,
    BucketCollection,
    epoch_size,
    posttrain_collection,
    pretrain_collection,
    town13_heldout_collection,
)
from lead_stream.index.query import run_query


def _frames(num_frames: dict[str, int], usable: dict[str, bool], town: dict[str, str]) -> pl.LazyFrame:
    rows = [
        {
            "route_id": r,
            "frame_idx": i,
            "num_frames": n,
            "frames_from_start": i,
            "frames_to_end": n - 1 - i,
            "usable": usable[r],
            "town": town[r],
            "is_junction": i % 4 == 0,
        }
        for r, n in num_frames.items()
        for i in range(n)
    ]
    return pl.DataFrame(rows).lazy()


FRAMES = _frames(
    {"a": 20, "b": 17, "c": 30, "d": 3},
    {"a": True, "b": True, "c": False, "d": True},
    {"a": "Town13", "b": "Town03", "c": "Town03", "d": "Town01"},
)


def test_pretrain_and_posttrain_ranges_on_a_handmade_table() -> None:
    pre = pretrain_collection().members(FRAMES).collect()
    ranges = pre.group_by("route_id").agg(
        pl.col("frame_idx").min().alias("lo"), pl.col("frame_idx").max().alias("hi"), pl.len()
    )
    assert ranges.sort("route_id").rows() == [("a", 1, 18, 18), ("b", 1, 15, 15), ("d", 1, 1, 1)]
    post = posttrain_collection().members(FRAMES).collect()
    assert post.filter(pl.col("route_id") == "a")["frame_idx"].to_list() == list(range(8, 12))
    assert post.filter(pl.col("route_id") == "b")["frame_idx"].to_list() == [8]  # N=17 -> one frame
    assert "d" not in post["route_id"] and "c" not in post["route_id"]


TOWN13_FRAMES = _frames(
    {"S/Town13_Rep0_a": 20, "S/Town03_Rep0_b": 17, "S/Town03_Rep0_c": 30, "S/Town01_Rep0_d": 3},
    {"S/Town13_Rep0_a": True, "S/Town03_Rep0_b": True, "S/Town03_Rep0_c": False, "S/Town01_Rep0_d": True},
    {
        "S/Town13_Rep0_a": "Town13",
        "S/Town03_Rep0_b": "Town03",
        "S/Town03_Rep0_c": "Town03",
        "S/Town01_Rep0_d": "Town13",
    },
)


def test_town13_heldout_rates_follow_lead_12() -> None:
    members = town13_heldout_collection("pretrain").members(TOWN13_FRAMES).collect()
    sizes = dict(members.group_by("bucket").len().rows())
    rates = dict(members.group_by("bucket").agg(pl.col("rate").first()).rows())
    # LEAD tests the route's path for "Town13" (route d's meta says Town13, its name does not: OTHER_TOWNS)
    assert sizes == {"town13": 18, "other_towns": 16}
    assert rates["town13"] == 0.0 and rates["other_towns"] == 34 / 16  # total / len(other), the same float
    assert epoch_size(members) == 34  # LEAD: epoch = sum(floor(len * rate)) = 0 + 34: others fill the epoch
    post = town13_heldout_collection("posttrain").members(TOWN13_FRAMES).collect()
    assert dict(post.group_by("bucket").len().rows()) == {"town13": 4, "other_towns": 1}  # frames 8..N-9


def test_first_matching_bucket_wins_and_unmatched_frames_are_left_out() -> None:
    collection = BucketCollection.from_sql(
        "junctions", {"junction": "is_junction", "town13": "town = 'Town13'"}, {"junction": 3.0}
    )
    members = collection.members(FRAMES).collect()
    a = members.filter(pl.col("route_id") == "a")
    assert set(a.filter(pl.col("frame_idx") % 4 == 0)["bucket"]) == {"junction"}
    assert set(a.filter(pl.col("frame_idx") % 4 != 0)["bucket"]) == {"town13"}
    b = members.filter(pl.col("route_id") == "b")
    assert set(b["bucket"]) == {"junction"}  # Town03 non-junction frames match no bucket
    assert set(members.filter(pl.col("bucket") == "junction")["rate"]) == {3.0}
    assert set(members.filter(pl.col("bucket") == "town13")["rate"]) == {1.0}


def test_expression_collection_round_trips_through_its_definition() -> None:
    collection = BucketCollection(
        name="fast",
        buckets={"fast": pl.col("frame_idx") > 10, "rest": pl.lit(True)},
        rates={"fast": 2.5, "rest": RATE_FILL},
        where="posttrain",
        params={"k": 1},
    )
    again = BucketCollection.from_definition(collection.definition())
    assert again.members(FRAMES).collect().equals(collection.members(FRAMES).collect())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "frames", "buckets": {"x": "TRUE"}}, "collection name"),
        ({"name": "bad name", "buckets": {"x": "TRUE"}}, "collection name"),
        ({"name": "ok", "buckets": {}}, "no buckets"),
        ({"name": "ok", "buckets": {"x": "TRUE"}, "rates": {"y": 1.0}}, "unknown buckets"),
        ({"name": "ok", "buckets": {"x": "TRUE"}, "rates": {"x": -1.0}}, ">= 0"),
        ({"name": "ok", "buckets": {"x": "TRUE"}, "rates": {"x": "twice"}}, "fill"),
    ],
    ids=[
        "reserved-name",
        "space-in-name",
        "no-buckets",
        "rate-for-unknown-bucket",
        "negative-rate",
        "bad-rate",
    ],
)
def test_bad_collection_definitions_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BucketCollection(**kwargs)


def test_bad_sql_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="SQL"):
        BucketCollection.from_sql("ok", {"x": "town = = 'a'"})


def test_user_collection_is_written_queried_and_rederived_by_reindex(
    indexed_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(indexed_root, root)
    collection = BucketCollection.from_sql(
        "junction_x3", {"junction": "frame_idx % 4 = 0", "other": "TRUE"}, {"junction": 3.0}, where="pretrain"
    )
    write_bucket_collection(root, collection)
    members = read_bucket_members(root, "junction_x3")
    assert members.height == read_bucket_members(root, "pretrain").height
    counts = run_query(
        root, "SELECT bucket, count(*) AS n, max(rate) AS rate FROM junction_x3 GROUP BY bucket"
    )
    assert dict(zip(counts["bucket"], counts["rate"])).get("other") == 1.0
    assert read_collection(root, "junction_x3").definition() == collection.definition()
    with pytest.raises(ConfigError, match="no_such_column"):
        write_bucket_collection(root, BucketCollection.from_sql("broken", {"x": "no_such_column > 1"}))
    summary = build_index(root, config=IndexConfig(workers=1, progress=False, force=True))
    assert summary.collections["junction_x3"] == members.height
