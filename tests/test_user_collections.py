"""User bucket collections keep their meaning: bucket order across re-indexing, reserved names, empty
buckets refused, and mixtures checked against the collection's buckets (issue 13, point 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from lead_stream.cli.main import app
from lead_stream.core.errors import ConfigError
from lead_stream.index import IndexConfig, build_index, read_bucket_members, write_bucket_collection
from lead_stream.index.bucket_store import bucket_schema
from lead_stream.index.buckets import BucketCollection
from lead_stream.index.query import bucket_report
from lead_stream.index.tables import DEFINITION_KEY, table_path
from lead_stream.loader import LoaderConfig, make_loader

# "all_else" sorts before "junc": a definition stored with sorted keys would let all_else take every frame
JUNC_BUCKETS = ["--bucket", "junc=frame_idx < 8", "--bucket", "all_else=TRUE", "--rate", "junc=3"]


@pytest.fixture()
def index_copy(indexed_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(indexed_root, root, ignore=shutil.ignore_patterns("cache"))
    return root


def _frame_sets(root: Path, collection: str) -> dict[str, set[tuple[str, int]]]:
    members = read_bucket_members(root, collection)
    return {
        bucket: set(zip(group["route_id"], group["frame_idx"]))
        for (bucket,), group in members.group_by("bucket")
    }


def test_bucket_order_survives_reindex_with_and_without_force_13(index_copy: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["buckets", str(index_copy), "--define", "junc_x3", *JUNC_BUCKETS])
    assert result.exit_code == 0, result.output
    defined = _frame_sets(index_copy, "junc_x3")
    junctions = pl.read_parquet(table_path(index_copy, "frames")).filter(pl.col("frame_idx") < 8)
    assert defined["junc"] and len(defined["junc"]) <= junctions.height
    for force in (False, True):
        (index_copy / "data").touch()  # a change on disk is no reason to reorder anything
        build_index(index_copy, config=IndexConfig(workers=1, progress=False, force=force))
        assert _frame_sets(index_copy, "junc_x3") == defined, f"force={force}"
        rates = read_bucket_members(index_copy, "junc_x3").group_by("bucket").agg(pl.col("rate").first())
        assert dict(rates.iter_rows()) == {"junc": 3.0, "all_else": 1.0}
    stored = json.loads(bucket_schema(index_copy, "junc_x3").metadata[DEFINITION_KEY])
    assert [entry["bucket"] for entry in stored["buckets"]] == ["junc", "all_else"]
    report = bucket_report(index_copy, ["junc_x3"], ("town",))["buckets"]
    assert report["bucket"].to_list() == ["junc", "all_else"]  # shown in match order too


def test_a_definition_stored_with_sorted_buckets_is_refused_not_reordered_13(index_copy: Path) -> None:
    old = {
        "name": "old",
        "where": {"sql": "pretrain"},
        "buckets": {"all_else": {"sql": "TRUE"}, "haz": {"sql": "light_hazard"}},
        "rates": {"haz": 3.0},
    }
    with pytest.raises(ConfigError, match="alphabetical order"):
        BucketCollection.from_definition(old)


def test_builtin_names_are_reserved_and_empty_buckets_refused_13(index_copy: Path) -> None:
    runner = CliRunner()
    before = read_bucket_members(index_copy, "posttrain")
    result = runner.invoke(app, ["buckets", str(index_copy), "--define", "posttrain", "--bucket", "a=TRUE"])
    assert isinstance(result.exception, ConfigError) and "'posttrain' is built in" in str(result.exception)
    assert read_bucket_members(index_copy, "posttrain").equals(before)

    empty_bucket = ["--bucket", "a=TRUE", "--bucket", "b=frame_idx < 8"]
    result = runner.invoke(app, ["buckets", str(index_copy), "--define", "shadowed", *empty_bucket])
    assert isinstance(result.exception, ConfigError) and "bucket 'b' gets no frame" in str(result.exception)
    result = runner.invoke(app, ["buckets", str(index_copy), "--define", "none", "--bucket", "a=FALSE"])
    assert isinstance(result.exception, ConfigError) and "'none' selects no frame" in str(result.exception)
    assert not table_path(index_copy, "shadowed").exists() and not table_path(index_copy, "none").exists()


def test_a_collection_emptied_by_reindex_is_named_in_a_warning_13(index_copy: Path) -> None:
    first = pl.read_parquet(table_path(index_copy, "routes"))["route_id"][0]
    collection = BucketCollection.from_sql("one_route", {"r": f"route_id = '{first}'"})
    write_bucket_collection(index_copy, collection)
    shutil.rmtree(index_copy / "data" / first)
    with pytest.warns(UserWarning, match="'one_route' selects no frame"):
        build_index(index_copy, config=IndexConfig(workers=1, progress=False))


def test_a_mixture_naming_an_unknown_bucket_fails_at_make_loader_and_set_mixture_13(
    sharded_root: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"buckets are \['all'\]"):
        make_loader(sharded_root, config=LoaderConfig(num_workers=0, mixture={"junction": 3.0}))
    loader = make_loader(sharded_root, config=LoaderConfig(num_workers=0, collection="posttrain"))
    with pytest.raises(ConfigError, match=r"collection 'posttrain'.*buckets are \['all'\]"):
        loader.set_mixture({"junction": 3.0, "other": 1.0})
