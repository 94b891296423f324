"""Bucket collections ↔ `index/buckets/<name>.parquet`: a collection's members are evaluated over the
frames table and written with the collection's definition in the file's metadata, so user collections
are re-derived on every rebuild."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.index.buckets import BucketCollection, default_collections
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
    """Evaluate `collection` over frames.parquet and write `index/buckets/<name>.parquet` atomically.

    Args:
        data_root: LEAD data root with a built index.
        collection: the collection (its definition is stored in the file's metadata).
        frames: frames table to use instead of reading index/frames.parquet.
        compression: Parquet codec.

    Returns:
        The written path.

    Raises:
        LeadFormatError: no frames table.
        ConfigError: an expression names an unknown column or does not evaluate.
    """
    if frames is None:
        from lead_stream.index.frame_store import scan_frames

        frames = scan_frames(data_root)  # lazy: only the columns the collection names are read
    try:
        members = collection.members(frames).collect()
    except pl.exceptions.PolarsError as error:
        raise ConfigError(f"collection {collection.name!r}: {str(error).strip().splitlines()[0]}") from None
    return _write_members(data_root, collection, members, compression)


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
    try:  # one query plan for all: polars scans the frame parts once for every collection
        members = pl.collect_all([c.members(frames) for c in collections.values()])
    except pl.exceptions.PolarsError:  # name the collection that fails
        members = [
            write_bucket_collection(data_root, c, frames=frames, compression=compression)
            for c in collections.values()
        ]
    sizes = {}
    for (name, collection), table in zip(collections.items(), members):
        path = table if isinstance(table, Path) else _write_members(data_root, collection, table, compression)
        sizes[name] = pq.read_metadata(path).num_rows
    return sizes
