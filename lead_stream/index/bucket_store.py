"""Bucket collections on disk: `index/buckets/<name>.parquet/`, one part per frames part, read as one table.

`buckets/<name>.parquet/part-<id>.parquet` holds the members (route_id, frame_idx, bucket, rate) of the frames
in `frames.parquet/part-<id>.parquet` (same file name), with the collection's definition in its metadata.
When `index` rewrites a frames part (a route added, changed or removed) only that part's bucket rows are
derived again (`mirror_parts`); a part whose frames part is gone is deleted. A "fill" bucket's rate (frames
of the whole collection / frames of the bucket) depends on every part, so parts store it null and
`read_bucket_members` / `scan_bucket_members` compute it over the whole collection: the result (sorted by
route_id, frame_idx) is the table a single pass over all frames gives. Bucket predicates are evaluated per
frame (row-wise expressions), so deriving by part changes nothing.

A collection written before parts (one `buckets/<name>.parquet` file, rates stored) is read as is, and
migrated to parts, with a message, by the next `index` that changes a frames part.

Every reader of bucket tables goes through `read_bucket_members` / `scan_bucket_members` / `bucket_schema`.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lead_stream.core import parquet
from lead_stream.core.errors import LeadFormatError
from lead_stream.core.parts import part_files
from lead_stream.index.buckets import BucketCollection, fill_rate
from lead_stream.index.tables import DEFINITION_KEY, table_path
from lead_stream.schemas.tables import (
    BUCKET_MEMBERS_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    TABLE_KEY,
    SchemaError,
    check_version,
    conform,
)

KEY = ("route_id", "frame_idx")
PART_TABLE = "bucket_part"  # TABLE_KEY of a part: the members schema with a nullable rate
# A "fill" bucket's rate (collection size / bucket size) is a property of the whole collection, so a part
# stores it null (computed when the collection is read); every other rate is stored.
BUCKET_PART_SCHEMA = pa.schema(
    [f.with_nullable(True) if f.name == "rate" else f for f in BUCKET_MEMBERS_SCHEMA]
)


def _conform_part(members: pl.DataFrame, metadata: Mapping[bytes, str]) -> pa.Table:
    """A part's rows with exactly `BUCKET_PART_SCHEMA` and the version + collection metadata."""
    checked = conform(members.with_columns(pl.col("rate").fill_null(0.0)).to_arrow(), "bucket_members")
    rate = members.to_arrow().column("rate").cast(pa.float64())  # nulls kept: "fill" rates
    meta = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: PART_TABLE.encode()}
    meta.update({k: v.encode() for k, v in metadata.items()})
    return pa.Table.from_arrays([*checked.columns[:3], rate], schema=BUCKET_PART_SCHEMA.with_metadata(meta))


def _repair(data_root: Path) -> str:
    return f"rebuild it: lead-stream index {data_root}"


def _files(data_root: Path, name: str) -> tuple[list[Path], str]:
    """(files, table kind) of collection `name`: its parts, or its single file from before parts.

    Raises:
        LeadFormatError: no such collection.
    """
    path = table_path(data_root, name)
    if path.is_file():
        return [path], "bucket_members"
    parts = part_files(path)
    if not parts:
        raise LeadFormatError(path, f"missing (build the index first: lead-stream index {data_root})")
    return parts, PART_TABLE


def bucket_schema(data_root: Path, name: str) -> pa.Schema:
    """Schema of collection `name` (with the definition in its metadata), version-checked.

    Raises:
        LeadFormatError: missing, unreadable or of another schema version.
    """
    files, kind = _files(data_root, name)
    schema = parquet.read_schema(files[0], repair=_repair(data_root))
    try:
        check_version(schema, kind, files[0])
    except SchemaError as error:
        raise LeadFormatError(files[0], str(error).split(": ", 1)[-1]) from None
    return schema


def bucket_files(data_root: Path, name: str) -> list[Path]:
    """The Parquet files of collection `name` (its parts, or its one file from before parts), version-checked.

    Raises:
        LeadFormatError: missing or of another schema version.
    """
    bucket_schema(data_root, name)
    return _files(data_root, name)[0]


def _with_fill_rates(members: pl.LazyFrame) -> pl.LazyFrame:
    """Null ("fill") rates computed over the whole collection; rows sorted by route_id, frame_idx."""
    return members.with_columns(rate=pl.coalesce(pl.col("rate"), fill_rate())).sort(*KEY)


def scan_bucket_members(data_root: Path, name: str) -> pl.LazyFrame:
    """Collection `name` as a lazy (route_id, frame_idx, bucket, rate) table, fill rates computed.

    Raises:
        LeadFormatError: missing or of another schema version.
    """
    bucket_schema(data_root, name)
    files, _ = _files(data_root, name)
    return _with_fill_rates(pl.scan_parquet(files))


def read_bucket_members(data_root: Path, name: str, *, check_version: bool = True) -> pl.DataFrame:
    """Members (route_id, frame_idx, bucket, rate) of collection `name`, sorted by route_id, frame_idx.

    Args:
        check_version: refuse a table without this schema version's metadata (the loader reads any table
            of these columns, e.g. one written by hand with `DataFrame.write_parquet`).

    Raises:
        LeadFormatError: missing, unreadable (names the damaged file) or of another schema version.
    """
    if check_version:
        bucket_schema(data_root, name)
    files, _ = _files(data_root, name)
    tables = [parquet.read_table(f, repair=_repair(data_root)) for f in files]
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")
    return _with_fill_rates(pl.from_arrow(table).lazy()).collect()


def bucket_counts(data_root: Path, name: str) -> dict[str, int]:
    """Frames per bucket of collection `name` (only the bucket column is read)."""
    files, _ = _files(data_root, name)
    counts = pl.scan_parquet(files).group_by("bucket").len().collect()
    return dict(counts.iter_rows())


def stored_definition(data_root: Path, name: str) -> str | None:
    """The definition JSON stored with collection `name` (None if it cannot be read)."""
    try:
        return (bucket_schema(data_root, name).metadata or {}).get(DEFINITION_KEY, b"").decode()
    except LeadFormatError:
        return None


def collection_size(data_root: Path, name: str) -> int:
    """Rows of collection `name` (Parquet footers only)."""
    files, _ = _files(data_root, name)
    return sum(pq.read_metadata(f).num_rows for f in files)


def mirrors(data_root: Path, name: str, frame_parts: Iterable[str]) -> bool:
    """Whether collection `name` has exactly one part per frames part (a single file from before parts
    counts as current: it was derived from every frame)."""
    path = table_path(data_root, name)
    return path.is_file() or {p.name for p in part_files(path)} == set(frame_parts)


def write_part(directory: Path, part: str, members: pl.DataFrame, metadata: Mapping[bytes, str]) -> None:
    """`members` (fill rates null) as `directory/part`, atomically (temp name outside the directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.{part}.tmp"
    try:
        pq.write_table(_conform_part(members, metadata), tmp, compression="zstd")
        tmp.replace(directory / part)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def metadata_of(collection: BucketCollection) -> dict[bytes, str]:
    import json

    from lead_stream.index.tables import COLLECTION_KEY, LEAD_NAME_KEY, PARAMS_KEY

    return {
        COLLECTION_KEY: collection.name,
        LEAD_NAME_KEY: collection.lead_name or "",
        PARAMS_KEY: json.dumps(dict(collection.params), sort_keys=True),
        DEFINITION_KEY: collection.definition_json(),
    }


def mirror_parts(
    data_root: Path, collections: Mapping[str, BucketCollection], *, redefine: Iterable[str] = ()
) -> int:
    """Make each collection's parts mirror the frames parts: derive the parts it lacks (every part for a
    collection in `redefine` or whose stored definition differs), delete those whose frames part is gone.
    A single-file collection from before parts is migrated (with a warning). One frames part is read at a
    time, once for all collections that lack it. Returns the number of bucket parts written.

    Raises:
        polars.exceptions.PolarsError: a collection's expression does not evaluate (callers name it).
    """
    from lead_stream.index.frame_store import frames_path

    frames = {p.name: p for p in part_files(frames_path(data_root))}
    redefine = set(redefine)
    targets: dict[str, Path] = {}
    lacking: dict[str, list[str]] = {}  # frames part -> collections lacking it
    for name, collection in collections.items():
        path = table_path(data_root, name)
        target = path
        have: set[str] = set()
        if path.is_file():
            warnings.warn(f"{path}: migrating the bucket table to parts ({path.name}/)", stacklevel=3)
            target = path.with_name(path.name + ".parts")
            shutil.rmtree(target, ignore_errors=True)
        elif name not in redefine and stored_definition(data_root, name) == collection.definition_json():
            have = {p.name for p in part_files(path)}
        targets[name] = target
        for part in frames:
            if part not in have:
                lacking.setdefault(part, []).append(name)
    written = 0
    for part, names in sorted(lacking.items()):
        scan = pl.scan_parquet(frames[part])
        tables = pl.collect_all([collections[n].members(scan, fill_rates=False) for n in names])
        for name, members in zip(names, tables):
            write_part(targets[name], part, members, metadata_of(collections[name]))
            written += 1
    for name, target in targets.items():
        for path in part_files(target):
            if path.name not in frames:
                path.unlink()
        final = table_path(data_root, name)
        if target != final:  # migrated: the single file makes way for the directory
            final.unlink()
            target.replace(final)
    return written
