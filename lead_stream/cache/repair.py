"""`verify --repair`: rebuild the routes of the shards the last `verify` found missing or corrupt."""

from __future__ import annotations

from pathlib import Path

from lead_stream.cache.identity import pipeline_id
from lead_stream.cache.manifest import read_manifest_info
from lead_stream.cache.shard_config import ShardConfig, ShardSummary
from lead_stream.core.errors import ConfigError


def repair_cache(cache_dir: Path, *, data_root: Path | None = None, progress: bool = False) -> ShardSummary:
    """Rebuild the routes of the shards the last `verify` found missing or corrupt, with the cache's config.

    Args:
        cache_dir: `<cache root>/<pipeline_id>/` (complete).
        data_root: the LEAD data root it was built from (default: the cache root's parent, the default place).
        progress: tqdm bar.

    Raises:
        ConfigError: the stored config no longer gives this cache's pipeline id (other code: rebuild).
    """
    from lead_stream.cache.shard import write_shards  # shard re-exports this function

    cache_dir = Path(cache_dir)
    info = read_manifest_info(cache_dir)
    stored = {**info["config"], **info.get("packing", {})}
    root = Path(data_root) if data_root is not None else cache_dir.parent.parent
    config = ShardConfig(
        collections=tuple(stored["collections"]),
        max_samples_per_shard=stored.get("max_samples_per_shard", ShardConfig().max_samples_per_shard),
        max_shard_bytes=stored.get("max_shard_bytes", ShardConfig().max_shard_bytes),
        cache_root=cache_dir.parent,  # where this cache is (not part of the pipeline id)
        progress=progress,
    )
    if pipeline_id(config) != cache_dir.name:
        raise ConfigError(
            f"{cache_dir}: its stored config gives pipeline id {pipeline_id(config)}; rebuild it"
        )
    return write_shards(root, config=config)
