"""Bucket table + `LoaderConfig` selection keys → the members a loader serves (buckets kept, frames left out).

`collection` names `<data_root>/index/buckets/<collection>.parquet`; `buckets` keeps only the named buckets
of it; `exclude_collection` (with `exclude_buckets`) removes every frame that collection lists, so a
validation set held out from training is never trained on. The result keeps the table's columns and order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.loader.config import LoaderConfig

if TYPE_CHECKING:  # imported where members are read (a catalog build), not by a warm loader start
    import polars as pl

FRAME_KEY = ("route_id", "frame_idx")


def bucket_table_path(data_root: Path, collection: str) -> Path:
    """`<data_root>/index/buckets/<collection>.parquet` (a directory of parts, or one file from before parts)."""
    return Path(data_root) / "index" / "buckets" / f"{collection}.parquet"


def selection_name(config: LoaderConfig) -> str:
    """The collection's name, plus a digest of the bucket selection and exclusion when there is one (names
    the on-disk catalog of exactly these members)."""
    if config.buckets is None and config.exclude_collection is None:
        return config.collection
    blob = json.dumps([config.buckets, config.exclude_collection, config.exclude_buckets]).encode()
    return f"{config.collection}~{hashlib.blake2b(blob, digest_size=6).hexdigest()}"


def read_members(data_root: Path, collection: str, buckets: Sequence[str] | None = None) -> pl.DataFrame:
    """The members (route_id, frame_idx, bucket, rate) of `collection`, only `buckets` of it when given.

    Raises:
        LeadFormatError: no bucket table for the collection.
        ConfigError: `buckets` names a bucket the table does not have.
    """
    import polars as pl

    from lead_stream.index.bucket_store import read_bucket_members  # Polars: not on a warm start's path

    path = bucket_table_path(data_root, collection)
    if not path.exists():
        raise LeadFormatError(path, f"no bucket table for collection {collection!r} (run `index`)")
    members = read_bucket_members(data_root, collection, check_version=False)  # parts or one file
    if buckets is None:
        return members
    known = members["bucket"].unique(maintain_order=True).to_list()
    unknown = [name for name in buckets if name not in known]
    if unknown:
        raise ConfigError(f"collection {collection!r} has no bucket {unknown[0]!r}; its buckets are {known}")
    return members.filter(pl.col("bucket").is_in(list(buckets)))


def selected_members(data_root: Path, config: LoaderConfig) -> tuple[pl.DataFrame, Path]:
    """The members the loader of `config` serves, and the bucket table they come from.

    Raises:
        LeadFormatError: a bucket table is missing.
        ConfigError: an unknown bucket, or the exclusion leaves no frame.
    """
    members = read_members(data_root, config.collection, config.buckets)
    if config.exclude_collection is not None:
        held_out = read_members(data_root, config.exclude_collection, config.exclude_buckets)
        kept = members.join(held_out.select(*FRAME_KEY).unique(), on=list(FRAME_KEY), how="anti")
        if kept.is_empty() and not members.is_empty():
            raise ConfigError(
                f"every frame of collection {config.collection!r} is in the held-out collection "
                f"{config.exclude_collection!r}: nothing is left to serve"
            )
        members = kept
    return members, bucket_table_path(data_root, config.collection)
