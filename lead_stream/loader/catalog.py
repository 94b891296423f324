"""Manifest + bucket table → the loader's catalog: flat numpy arrays addressing every sample by row id.

One row per manifest sample (shard index, byte offset and size, key, route, frame) plus, per bucket,
the row ids of its members. Arrays only (keys as fixed-width bytes, routes as codes), so forked
workers do not copy them on read. Frames that are in the bucket table but not in the manifest (failed
builds, listed in the cache's failures.parquet) are left out and counted in `num_missing`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lead_stream.core.errors import LeadFormatError

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Everything a worker needs to turn a manifest row id into bytes and labels."""

    pipeline_id: str
    shard_names: tuple[str, ...]  # per shard index, the file name in the cache directory
    sample_shard: np.ndarray  # (N,) int32 shard index
    sample_offset: np.ndarray  # (N,) int64 byte offset of the sample's first tar header
    sample_size: np.ndarray  # (N,) int64 bytes of the sample's headers + payloads
    sample_key: np.ndarray  # (N,) bytes_ UTF-8 key "<route_id>/<frame_idx:04d>"
    sample_route: np.ndarray  # (N,) int32 code into `routes`
    sample_frame: np.ndarray  # (N,) int32 frame_idx
    routes: tuple[str, ...]  # route_id per code
    bucket_names: tuple[str, ...]  # in the bucket table's order of first appearance
    bucket_rates: tuple[float, ...]  # the table's rate of each bucket
    bucket_rows: tuple[np.ndarray, ...]  # per bucket, int64 row ids of its members
    num_missing: int  # bucket-table frames absent from the manifest (skipped)

    @property
    def num_samples(self) -> int:
        """Manifest rows."""
        return int(self.sample_shard.shape[0])

    @property
    def collection_size(self) -> int:
        """Distinct samples of the collection that are in the manifest."""
        return int(np.unique(np.concatenate(self.bucket_rows)).shape[0]) if self.bucket_rows else 0

    def key(self, row: int) -> str:
        """The sample key of manifest row `row`."""
        return self.sample_key[row].decode()

    @classmethod
    def from_tables(
        cls,
        *,
        pipeline_id: str,
        samples: pl.DataFrame,
        shards: pl.DataFrame,
        buckets: pl.DataFrame,
        buckets_path: Path | str,
    ) -> Catalog:
        """Join the manifest's samples/shards tables with one collection's bucket table.

        Args:
            pipeline_id: the cache's pipeline id.
            samples: manifest samples (key, route_id, frame_idx, shard, offset, size_bytes).
            shards: manifest shards (shard, ...), in shard order.
            buckets: bucket table (route_id, frame_idx, bucket, rate).
            buckets_path: the bucket table's file, for error messages.

        Raises:
            LeadFormatError: the bucket table is empty or has a bucket with two different rates.
        """
        if buckets.is_empty():
            raise LeadFormatError(buckets_path, "bucket table has no rows (empty collection)")
        shard_names = tuple(str(s) for s in shards["shard"].to_list())
        shard_of = {name: i for i, name in enumerate(shard_names)}
        unknown = set(samples["shard"].unique().to_list()) - set(shard_of)
        if unknown:
            raise LeadFormatError(
                f"{pipeline_id}/samples.parquet", f"samples in unknown shards {sorted(unknown)[:3]}"
            )
        rows = samples.select(
            pl.col("route_id").cast(pl.String), pl.col("frame_idx").cast(pl.Int32)
        ).with_row_index("row")
        routes = samples["route_id"].cast(pl.String).unique(maintain_order=True)
        route_code = {name: i for i, name in enumerate(routes.to_list())}
        members = buckets.select(
            pl.col("route_id").cast(pl.String), pl.col("frame_idx").cast(pl.Int32), "bucket", "rate"
        ).with_row_index("order")
        joined = members.join(rows, on=["route_id", "frame_idx"], how="left").sort("order")
        missing = joined.filter(pl.col("row").is_null())
        if missing.height:
            _LOG.warning(
                "%d frames of %s are not in cache %s (failed builds); skipped, first: %s/%04d",
                missing.height,
                buckets_path,
                pipeline_id,
                missing["route_id"][0],
                missing["frame_idx"][0],
            )
        present = joined.filter(pl.col("row").is_not_null())
        rates = members.group_by("bucket", maintain_order=True).agg(pl.col("rate").unique())
        for name, bucket_rates in rates.iter_rows():
            if len(bucket_rates) != 1:
                raise LeadFormatError(
                    buckets_path, f"bucket {name!r} has several rates {sorted(bucket_rates)}"
                )
        names = tuple(rates["bucket"].to_list())
        bucket_rows = tuple(
            present.filter(pl.col("bucket") == name)["row"].to_numpy().astype(np.int64) for name in names
        )
        return cls(
            pipeline_id=pipeline_id,
            shard_names=shard_names,
            sample_shard=np.array([shard_of[s] for s in samples["shard"].to_list()], dtype=np.int32),
            sample_offset=samples["offset"].to_numpy().astype(np.int64),
            sample_size=samples["size_bytes"].to_numpy().astype(np.int64),
            sample_key=np.array([key.encode() for key in samples["key"].to_list()], dtype=np.bytes_),  # UTF-8
            sample_route=np.array([route_code[r] for r in samples["route_id"].to_list()], dtype=np.int32),
            sample_frame=samples["frame_idx"].to_numpy().astype(np.int32),
            routes=tuple(routes.to_list()),
            bucket_names=names,
            bucket_rates=tuple(float(r[0]) for r in rates["rate"].to_list()),
            bucket_rows=bucket_rows,
            num_missing=int(missing.height),
        )
