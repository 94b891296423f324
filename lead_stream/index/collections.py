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

from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.core.parts import part_files
from lead_stream.index.bucket_store import (
    bucket_counts,
    bucket_schema,
    collection_size,
    mirror_parts,
    mirrors,
    stored_definition,
)
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
    data_root: Path, collection: BucketCollection, *, compression: str = "zstd"
) -> Path:
    """Evaluate a user `collection` over frames.parquet and write `index/buckets/<name>.parquet` (one part
    per frames part, each written atomically; `bucket_store`).

    Args:
        data_root: LEAD data root with a built index.
        collection: the collection (its definition is stored in the metadata of every part).
        compression: Parquet codec (of a single-file table, written when the frames table is one file).

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
    from lead_stream.index.frame_store import frames_path, scan_frames

    frames = scan_frames(data_root)  # lazy: only the columns the collection names are read
    try:  # one lazy pass for the counts, then part by part
        counts = dict(
            collection.members(frames, fill_rates=False).group_by("bucket").len().collect().iter_rows()
        )
    except pl.exceptions.PolarsError as error:
        raise ConfigError(f"collection {collection.name!r}: {str(error).strip().splitlines()[0]}") from None
    problem = empty_problem(collection, counts, frames)
    if problem is not None:
        raise ConfigError(f"{problem}; nothing written")
    if frames_path(data_root).is_file():  # an index from before parts: one file, as it was written then
        return _write_members(data_root, collection, _members(collection, frames), compression)
    mirror_parts(data_root, {collection.name: collection}, redefine=[collection.name])
    return table_path(data_root, collection.name)


def _members(collection: BucketCollection, frames: pl.LazyFrame) -> pl.DataFrame:
    try:
        return collection.members(frames).collect()
    except pl.exceptions.PolarsError as error:
        raise ConfigError(f"collection {collection.name!r}: {str(error).strip().splitlines()[0]}") from None


def empty_problem(collection: BucketCollection, counts: dict[str, int], frames: pl.LazyFrame) -> str | None:
    """Why a collection with `counts` frames per bucket is unusable (no frame at all, or a bucket without
    frames), or None."""
    if not any(counts.values()):
        where, _ = collection.expressions()
        eligible = frames.filter(where.fill_null(False)).select(pl.len()).collect().item()
        return (
            f"collection {collection.name!r} selects no frame ({eligible:,} frames pass its where "
            f"{collection.where if isinstance(collection.where, str) else '<expr>'!r}, none matches a bucket)"
        )
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
    """The definition stored with collection `name`."""
    meta = bucket_schema(data_root, name).metadata or {}
    if DEFINITION_KEY not in meta:
        raise LeadFormatError(table_path(data_root, name), "no stored collection definition")
    return BucketCollection.from_definition(json.loads(meta[DEFINITION_KEY]))


def collection_sizes(data_root: Path) -> dict[str, int] | None:
    """Rows per collection if every collection mirrors the frames parts and every default collection is
    on disk with its current definition (footers and directory listings only); else None."""
    from lead_stream.index.frame_store import frames_path

    frames = frames_path(data_root)
    frame_parts = [p.name for p in part_files(frames)]
    sizes = {}
    for name in collection_names(data_root):
        if not frames.is_file() and not mirrors(data_root, name, frame_parts):  # a single file: as is
            return None
        try:
            sizes[name] = collection_size(data_root, name)
        except (OSError, pa.ArrowInvalid, LeadFormatError):
            return None
    for collection in default_collections():
        if (
            collection.name not in sizes
            or stored_definition(data_root, collection.name) != collection.definition_json()
        ):
            return None
    return sizes


def write_collections(data_root: Path, *, rebuild: bool = False) -> dict[str, int]:
    """Bring the default collections and every user collection already in index/buckets/ up to date with
    the frames parts (`bucket_store.mirror_parts`: only frames parts new since the last build are read;
    `rebuild`: every part derived again). Returns rows per collection."""
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
    redefine = list(collections) if rebuild else []
    try:
        mirror_parts(data_root, collections, redefine=redefine)
    except pl.exceptions.PolarsError:  # name the collection that fails; the others are written
        for name, collection in list(collections.items()):
            try:
                mirror_parts(data_root, {name: collection}, redefine=redefine)
            except pl.exceptions.PolarsError as error:
                warnings.warn(
                    f"{table_path(data_root, name)}: cannot re-derive collection ({error})", stacklevel=2
                )
                collections.pop(name)
    builtin = set(builtin_names())
    frames = None
    sizes = {}
    for name, collection in collections.items():
        sizes[name] = collection_size(data_root, name)
        if name not in builtin:
            counts = bucket_counts(data_root, name)
            if frames is None:
                from lead_stream.index.frame_store import scan_frames

                frames = scan_frames(data_root)
            problem = empty_problem(collection, counts, frames)
            if problem is not None:
                warnings.warn(f"{table_path(data_root, name)}: {problem}", stacklevel=2)
    return sizes
