"""Stage 2, index: raw routes (`sources`) → Parquet tables under `<data_root>/index/`.

`build_index` writes `routes.parquet` (one row per route, LEAD's filter), `frames.parquet` (every meta
scalar of every frame) and `buckets/<collection>.parquet` (bucket members and rates); buckets are queries
(`buckets.BucketCollection`) evaluated over the frames table, and `query.run_query` runs SQL over all of it.
"""

from lead_stream.index.bucket_store import read_bucket_members, scan_bucket_members
from lead_stream.index.buckets import BucketCollection
from lead_stream.index.build import IndexConfig, IndexSummary, build_index
from lead_stream.index.collections import read_collection, write_bucket_collection
from lead_stream.index.tables import collection_names, index_dir, table_path

__all__ = [
    "BucketCollection",
    "IndexConfig",
    "IndexSummary",
    "build_index",
    "collection_names",
    "index_dir",
    "read_bucket_members",
    "read_collection",
    "scan_bucket_members",
    "table_path",
    "write_bucket_collection",
]
