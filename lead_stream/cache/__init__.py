"""Stage 3, cache: index bucket tables → preprocessed samples in WebDataset tar shards with a Parquet manifest.

Frame preprocessing: `frame` (a frame's raw inputs), `labels` (boxes, BEV occupancy, radar), `targets`
(ego targets), `features` (the sample's named members and their encoding). Building: `chunks` (the per-route
plan and one chunk of samples in a worker), `tar_writer` (tar bytes and the journal), `shard`
(`write_shards`), `merge` (`merge_manifests`), `unchanged` (the metadata-only no-op check), `identity`
(the pipeline id). Reading and checking: `manifest` (`read_manifest`, `verify_cache`) and `show` (one sample
as a PNG).

The names below are imported on first use, so `import lead_stream.cache.features` (the loader's decoder)
does not import the builder and its tables.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "pipeline_id": "lead_stream.cache.identity",
    "Manifest": "lead_stream.cache.manifest",
    "read_manifest": "lead_stream.cache.manifest",
    "resolve_cache_dir": "lead_stream.cache.manifest",
    "verify_cache": "lead_stream.cache.manifest",
    "ShardConfig": "lead_stream.cache.shard",
    "ShardSummary": "lead_stream.cache.shard",
    "merge_manifests": "lead_stream.cache.shard",
    "write_shards": "lead_stream.cache.shard",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
