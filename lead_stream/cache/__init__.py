"""Stage 3, cache: index bucket tables → preprocessed samples in WebDataset tar shards with a Parquet manifest.

Frame preprocessing: `frame` (a frame's raw inputs), `labels` (boxes, BEV occupancy, radar), `targets`
(ego targets), `features` (the sample's named members and their encoding). Building: `chunks` (the per-route
plan and one chunk of samples in a worker), `tar_writer` (tar bytes and the journal), `shard`
(`write_shards`, `merge_manifests`), `identity` (the pipeline id). Reading and checking: `manifest`
(`read_manifest`, `verify_cache`) and `show` (one sample as a PNG).
"""

from lead_stream.cache.identity import pipeline_id
from lead_stream.cache.manifest import Manifest, read_manifest, resolve_cache_dir, verify_cache
from lead_stream.cache.shard import ShardConfig, ShardSummary, merge_manifests, write_shards

__all__ = [
    "Manifest",
    "ShardConfig",
    "ShardSummary",
    "merge_manifests",
    "pipeline_id",
    "read_manifest",
    "resolve_cache_dir",
    "verify_cache",
    "write_shards",
]
