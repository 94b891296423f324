"""Manifest + bucket table → the loader's catalog: flat numpy arrays addressing every sample by row id.

One row per manifest sample, in key order (shard index, byte offset and size, key, route code, frame)
plus, per bucket, the row ids of its members in the bucket table's order. Built with vectorised column
operations only (no per-sample Python objects), so 3 M samples take seconds, and kept as plain arrays
(keys as fixed-width bytes, routes as codes) that `catalog_store` saves as `.npy` files and every rank
and worker memory-maps. Frames that are in the bucket table but not in the manifest (failed builds,
listed in the cache's failures.parquet) are left out and counted in `num_missing`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lead_stream.core.errors import LeadFormatError

if TYPE_CHECKING:  # imported where a catalog is built: mapping a stored one needs neither
    import polars as pl

_LOG = logging.getLogger(__name__)
SAMPLE_COLUMNS = ("key", "route_id", "frame_idx", "shard", "offset", "size_bytes")  # manifest columns read
ARRAY_FIELDS = (
    "sample_shard",
    "sample_offset",
    "sample_size",
    "sample_key",
    "sample_route",
    "sample_frame",
    "routes",
    "shard_names",
    "bucket_row_ids",
    "bucket_bounds",
)


@dataclass(frozen=True)
class Catalog:
    """Everything a worker needs to turn a manifest row id into bytes and labels."""

    pipeline_id: str
    shard_names: np.ndarray  # (S,) bytes_ file name of each shard index in the cache directory
    sample_shard: np.ndarray  # (N,) int32 shard index
    sample_offset: np.ndarray  # (N,) int64 byte offset of the sample's first tar header
    sample_size: np.ndarray  # (N,) int64 bytes of the sample's headers + payloads
    sample_key: np.ndarray  # (N,) bytes_ UTF-8 key "<route_id>/<frame_idx:04d>"
    sample_route: np.ndarray  # (N,) int32 code into `routes`
    sample_frame: np.ndarray  # (N,) int32 frame_idx
    routes: np.ndarray  # (R,) bytes_ route_id per code
    bucket_names: tuple[str, ...]  # in the bucket table's order of first appearance
    bucket_rates: tuple[float, ...]  # the table's rate of each bucket
    bucket_row_ids: np.ndarray  # (M,) int64 row ids of every bucket's members, bucket after bucket
    bucket_bounds: np.ndarray  # (num_buckets + 1,) int64 bucket b = bucket_row_ids[bounds[b]:bounds[b+1]]
    num_missing: int  # bucket-table frames absent from the manifest (skipped)
    collection_size: int  # distinct samples of the collection that are in the manifest (computed once)

    @property
    def num_samples(self) -> int:
        """Manifest rows."""
        return int(self.sample_shard.shape[0])

    @property
    def bucket_rows(self) -> tuple[np.ndarray, ...]:
        """Per bucket, int64 row ids of its members (views of `bucket_row_ids`)."""
        b = self.bucket_bounds
        return tuple(self.bucket_row_ids[b[i] : b[i + 1]] for i in range(len(self.bucket_names)))

    def key(self, row: int) -> str:
        """The sample key of manifest row `row`."""
        return self.sample_key[row].decode()

    def route_id(self, code: int) -> str:
        """The route id of route code `code`."""
        return self.routes[code].decode()

    def shard_name(self, shard: int) -> str:
        """The file name of shard index `shard`."""
        return self.shard_names[shard].decode()

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
            samples: manifest samples (at least `SAMPLE_COLUMNS`), in any order (rows are sorted by key).
            shards: manifest shards (shard, ...).
            buckets: bucket table (route_id, frame_idx, bucket, rate), in the collection's order.
            buckets_path: the bucket table's file, for error messages.

        Raises:
            LeadFormatError: the bucket table is empty, has a bucket with two different rates, or samples
                name shards the shards table lacks.
        """
        import polars as pl

        if buckets.is_empty():
            raise LeadFormatError(buckets_path, "bucket table has no rows (empty collection)")
        samples = samples.select(SAMPLE_COLUMNS).sort("key")
        shard_names = shards["shard"].cast(pl.String).sort()
        shard_index = pl.DataFrame({"shard": shard_names}).with_row_index("shard_idx")
        located = samples.join(shard_index, on="shard", how="left", maintain_order="left")
        unknown = located.filter(pl.col("shard_idx").is_null())["shard"].unique().sort()
        if len(unknown):
            raise LeadFormatError(
                f"{pipeline_id}/samples.parquet", f"samples in unknown shards {unknown.to_list()[:3]}"
            )
        routes = samples["route_id"].cast(pl.String).unique(maintain_order=True)
        route_index = pl.DataFrame({"route_id": routes}).with_row_index("route_code")
        located = located.join(route_index, on="route_id", how="left", maintain_order="left")
        rows = samples.select(
            pl.col("route_id").cast(pl.String), pl.col("frame_idx").cast(pl.Int32)
        ).with_row_index("row")
        members = buckets.select(
            pl.col("route_id").cast(pl.String), pl.col("frame_idx").cast(pl.Int32), "bucket", "rate"
        )
        rates = members.group_by("bucket", maintain_order=True).agg(pl.col("rate").unique())
        for name, bucket_rates in rates.iter_rows():
            if len(bucket_rates) != 1:
                raise LeadFormatError(
                    buckets_path, f"bucket {name!r} has several rates {sorted(bucket_rates)}"
                )
        names = tuple(rates["bucket"].to_list())
        joined = members.join(rows, on=["route_id", "frame_idx"], how="left", maintain_order="left")
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
        bucket_of = pl.DataFrame({"bucket": list(names)}).with_row_index("bucket_idx")
        present = (
            joined.filter(pl.col("row").is_not_null())
            .join(bucket_of, on="bucket", how="left", maintain_order="left")
            .with_row_index("order")
            .sort("bucket_idx", "order")  # bucket after bucket, each in the table's order
        )
        counts = np.bincount(present["bucket_idx"].to_numpy(), minlength=len(names))
        row_ids = present["row"].to_numpy().astype(np.int64)
        return cls(
            pipeline_id=pipeline_id,
            shard_names=strings_to_bytes(shard_names),
            sample_shard=located["shard_idx"].to_numpy().astype(np.int32),
            sample_offset=samples["offset"].to_numpy().astype(np.int64),
            sample_size=samples["size_bytes"].to_numpy().astype(np.int64),
            sample_key=strings_to_bytes(samples["key"]),
            sample_route=located["route_code"].to_numpy().astype(np.int32),
            sample_frame=samples["frame_idx"].to_numpy().astype(np.int32),
            routes=strings_to_bytes(routes),
            bucket_names=names,
            bucket_rates=tuple(float(r[0]) for r in rates["rate"].to_list()),
            bucket_row_ids=row_ids,
            bucket_bounds=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            num_missing=int(missing.height),
            collection_size=int(np.unique(row_ids).shape[0]),
        )


def strings_to_bytes(strings: pl.Series) -> np.ndarray:
    """A string column → a fixed-width `bytes_` array (UTF-8, NUL-padded) without a Python object per row."""
    import pyarrow as pa

    if strings.is_empty():
        return np.zeros(0, dtype="S1")
    lengths = strings.str.len_bytes()
    width = max(int(lengths.max()), 1)
    if (lengths != strings.str.len_chars()).any():  # non-ASCII: padding counts characters, so go slowly
        return np.array([s.encode() for s in strings.to_list()], dtype=f"S{width}")
    padded = strings.str.pad_end(width, "\0").to_arrow().cast(pa.large_string())
    if isinstance(padded, pa.ChunkedArray):
        padded = padded.combine_chunks()
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int64)
    start = int(offsets[padded.offset])
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[start : start + width * len(strings)]
    return data.view(f"S{width}").copy()
