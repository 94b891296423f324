"""Bucket collections ↔ `index/buckets/<name>.parquet`: a collection's members are evaluated over the
frames table and written with the collection's definition in the file's metadata, so user collections
are re-derived on every rebuild, with their buckets in the order they were defined (first match wins).

A user collection cannot take a built-in name (`pretrain`, `posttrain`, ...), and one that selects no
frame, or has a bucket that gets none, is refused when it is defined; when a re-index leaves a user
collection or one of its buckets empty, a warning names it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.index.buckets import BucketCollection, builtin_names, default_collections
from lead_stream.index.tables import (
    COLLECTION_KEY,
    DEFINITION_KEY,
    LEAD_NAME_KEY,
    PARAMS_KEY,
    collection_names,
    table_path,
    write_parquet,
)
from lead_stream.schemas.tables import conform


def write_bucket_collection(
    data_root: Path,
    collection: BucketCollection,
    *,
    frames: pl.LazyFrame | None = None,
    compression: str = "zstd",
) -> Path:
    """Evaluate a user `collection` over frames.parquet and write `index/buckets/<name>.parquet` atomically.

    Args:
        data_root: LEAD data root with a built index.
        collection: the collection (its definition is stored in the file's metadata).
        frames: frames table to use instead of reading index/frames.parquet.
        compression: Parquet codec.

    Returns:
        The written path.

    Raises:
        LeadFormatError: no frames table.
        ConfigError: a built-in collection name; the collection or one of its buckets selects no frame;
            an expression names an unknown column or does not evaluate.
    """
    if collection.name in builtin_names():
        raise ConfigError(
            f"collection name {collection.name!r} is built in (lead-stream index writes "
            f"{', '.join(builtin_names())}); give your collection another name"
        )
    if frames is None:
        from lead_stream.index.frame_store import scan_frames

        frames = scan_frames(data_root)  # lazy: only the columns the collection names are read
    members = _members(collection, frames)
    problem = empty_problem(collection, members, frames)
    if problem is not None:
        raise ConfigError(f"{problem}; nothing written")
    return _write_members(data_root, collection, members, compression)


def _members(collection: BucketCollection, frames: pl.LazyFrame) -> pl.DataFrame:
    try:
        return collection.members(frames).collect()
    except pl.exceptions.PolarsError as error:
        raise ConfigError(f"collection {collection.name!r}: {str(error).strip().splitlines()[0]}") from None


def empty_problem(collection: BucketCollection, members: pl.DataFrame, frames: pl.LazyFrame) -> str | None:
    """Why `members` of `collection` is unusable (no frame at all, or a bucket without frames), or None."""
    if members.is_empty():
        where, _ = collection.expressions()
        eligible = frames.filter(where.fill_null(False)).select(pl.len()).collect().item()
        return (
            f"collection {collection.name!r} selects no frame ({eligible:,} frames pass its where "
            f"{collection.where if isinstance(collection.where, str) else '<expr>'!r}, none matches a bucket)"
        )
    counts = dict(members.group_by("bucket").len().iter_rows())
    empty = [name for name in collection.buckets if counts.get(name, 0) == 0]
    if not empty:
        return None
    sizes = ", ".join(f"{name} {counts.get(name, 0):,}" for name in collection.buckets)
    return (
        f"collection {collection.name!r}: bucket {empty[0]!r} gets no frame (frames per bucket, first "
        f"match wins: {sizes}); change its SQL or its place in the bucket order"
    )


def _write_members(
    data_root: Path, collection: BucketCollection, members: pl.DataFrame, compression: str
) -> Path:
    """`members` of `collection` → `index/buckets/<name>.parquet` with the definition in the metadata."""
    table = conform(
        members.to_arrow(),
        "bucket_members",
        metadata={
            COLLECTION_KEY: collection.name,
            LEAD_NAME_KEY: collection.lead_name or "",
            PARAMS_KEY: json.dumps(dict(collection.params), sort_keys=True),
            DEFINITION_KEY: collection.definition_json(),
        },
    )
    path = table_path(data_root, collection.name)
    write_parquet(table, path, compression)
    return path


def read_collection(data_root: Path, name: str) -> BucketCollection:
    """The definition stored in `index/buckets/<name>.parquet`."""
    path = table_path(data_root, name)
    meta = pq.read_schema(path).metadata or {}
    if DEFINITION_KEY not in meta:
        raise LeadFormatError(path, "no stored collection definition")
    return BucketCollection.from_definition(json.loads(meta[DEFINITION_KEY]))


def stored_definition(data_root: Path, name: str) -> str | None:
    try:
        return (pq.read_schema(table_path(data_root, name)).metadata or {}).get(DEFINITION_KEY, b"").decode()
    except (OSError, pa.ArrowInvalid):
        return None


def collection_sizes(data_root: Path) -> dict[str, int] | None:
    """Rows per collection file if every default collection is on disk with its current definition."""
    sizes, definitions = {}, {}
    for name in collection_names(data_root):
        try:
            metadata = pq.read_metadata(table_path(data_root, name))  # one open: rows and definition
        except (OSError, pa.ArrowInvalid):
            return None
        sizes[name] = metadata.num_rows
        definitions[name] = (metadata.metadata or {}).get(DEFINITION_KEY, b"").decode()
    for collection in default_collections():
        if definitions.get(collection.name) != collection.definition_json():
            return None
    return sizes


def write_collections(data_root: Path, frames: pl.LazyFrame, compression: str) -> dict[str, int]:
    """Write the default collections and re-derive every user collection already in index/buckets/."""
    collections = {c.name: c for c in default_collections()}
    for name in collection_names(data_root):
        if name in collections:
            continue
        try:
            collections[name] = read_collection(data_root, name)
        except (LeadFormatError, ValueError, pl.exceptions.PolarsError) as error:
            warnings.warn(
                f"{table_path(data_root, name)}: cannot re-derive collection ({error}); left as is",
                stacklevel=2,
            )
    builtin = set(builtin_names())
    try:  # one query plan for all: polars scans the frame parts once for every collection
        tables = pl.collect_all([c.members(frames) for c in collections.values()])
    except pl.exceptions.PolarsError:  # name the collection that fails
        tables = [_members(c, frames) for c in collections.values()]
    sizes = {}
    for (name, collection), members in zip(collections.items(), tables):
        problem = None if name in builtin else empty_problem(collection, members, frames)
        if problem is not None:
            warnings.warn(f"{table_path(data_root, name)}: {problem}", stacklevel=2)
        _write_members(data_root, collection, members, compression)
        sizes[name] = members.height
    return sizes
