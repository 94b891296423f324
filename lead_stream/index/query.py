"""Index tables → answers: Polars SQL over frames, routes and every bucket collection, and bucket reports.

Read side of the index (`lead_stream.index` writes it). Each table is a lazy `pl.scan_parquet`, checked
against its schema version first; a bucket collection is queried by its name (`pretrain`, `posttrain`, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl

from lead_stream.core import parquet
from lead_stream.core.errors import ConfigError, LeadFormatError, LeadStreamError
from lead_stream.index.bucket_store import bucket_schema, scan_bucket_members
from lead_stream.index.tables import BUCKETS_DIR, DEFINITION_KEY, collection_names, index_dir, table_path
from lead_stream.schemas.tables import SchemaError, check_version


def load_tables(data_root: Path) -> dict[str, pl.LazyFrame]:
    """Lazy scans of every index table: "frames", "routes" and each bucket collection by name.

    Raises:
        LeadFormatError: no index (or a table of another schema version).
    """
    from lead_stream.index.frame_store import scan_frames

    out = {"frames": scan_frames(data_root)}
    path = table_path(data_root, "routes")
    if not path.is_file():
        raise LeadFormatError(path, f"missing (build the index first: lead-stream index {data_root})")
    try:
        check_version(
            parquet.read_schema(path, repair=f"rebuild it: lead-stream index {data_root}"), "routes", path
        )
    except SchemaError as error:
        raise LeadFormatError(path, str(error).split(": ", 1)[-1]) from None
    out["routes"] = pl.scan_parquet(path)
    for name in collection_names(data_root):
        out[name] = scan_bucket_members(data_root, name)  # parts read as one table, fill rates computed
    return out


class QueryError(LeadStreamError, ValueError):
    """An SQL query over the index tables failed (syntax, unknown table or column)."""


def run_query(
    data_root: Path, sql: str, *, extra_tables: Mapping[str, pl.LazyFrame] | None = None
) -> pl.DataFrame:
    """Run Polars SQL over the index tables (`frames`, `routes`, `pretrain`, `posttrain`, user collections).

    Args:
        data_root: LEAD data root with a built index.
        sql: the query.
        extra_tables: more tables by name (e.g. a cache's `samples`, `shards`, `failures`).

    Raises:
        LeadFormatError: no index.
        QueryError: the query is invalid.
    """
    context = pl.SQLContext({**load_tables(data_root), **(extra_tables or {})})
    try:
        return context.execute(sql, eager=True)
    except (pl.exceptions.PolarsError, ValueError) as error:
        raise QueryError(
            f"query: {str(error).strip().splitlines()[0]} (tables: {', '.join(context.tables())})"
        ) from None


def _defined_order(data_root: Path, name: str) -> list[str]:
    """Bucket names of collection `name` in their match order (from its stored definition; [] if none)."""
    metadata = bucket_schema(data_root, name).metadata or {}
    try:
        stored = json.loads(metadata.get(DEFINITION_KEY, b"{}"))["buckets"]
    except (KeyError, json.JSONDecodeError):
        return []
    return [entry["bucket"] for entry in stored] if isinstance(stored, list) else list(stored)


def bucket_report(
    data_root: Path, collections: Iterable[str] | None = None, by: tuple[str, ...] = ("town", "scenario")
) -> dict[str, pl.DataFrame]:
    """Frames per bucket, and per bucket x each column of `by`, for the given collections (default: all).

    Returns:
        {"buckets": (collection, bucket, rate, frames, epoch_frames), "<col>": per-column breakdown, ...}
    """
    tables = load_tables(data_root)
    names = list(collections) if collections is not None else collection_names(data_root)
    unknown = [n for n in names if n not in tables or n in ("frames", "routes")]
    if unknown:
        raise LeadFormatError(
            index_dir(data_root) / BUCKETS_DIR, f"no collection {unknown}; have {collection_names(data_root)}"
        )
    columns = tables["frames"].collect_schema().names()
    bad = [c for c in by if c not in columns]
    if bad:
        raise ConfigError(
            f"--by {bad}: not frames columns; e.g. town, scenario, weather_setting, is_junction"
        )
    members = pl.concat([tables[n].with_columns(collection=pl.lit(n)) for n in names]) if names else None
    if members is None:
        return {}
    members = members.collect()
    order = pl.DataFrame(
        [(n, b, i) for n in names for i, b in enumerate(_defined_order(data_root, n))],
        schema={"collection": pl.String, "bucket": pl.String, "bucket_idx": pl.Int64},
        orient="row",
    )
    report = {
        "buckets": (
            members.group_by("collection", "bucket", maintain_order=True)
            .agg(pl.col("rate").first(), frames=pl.len())
            .with_columns(epoch_frames=(pl.col("frames") * pl.col("rate")).floor().cast(pl.Int64))
            .join(order, on=["collection", "bucket"], how="left", maintain_order="left")
            .with_row_index("seen")
            .sort(pl.col("collection").cast(pl.Enum(names)), "bucket_idx", "seen", nulls_last=True)
            .drop("seen", "bucket_idx")
        )
    }
    joined = (
        members.lazy()
        .join(tables["frames"].select("route_id", "frame_idx", *by), on=["route_id", "frame_idx"], how="left")
        .collect()
    )
    for column in by:
        report[column] = (
            joined.group_by("collection", "bucket", column)
            .agg(frames=pl.len())
            .sort("collection", "bucket", column)
        )
    return report
