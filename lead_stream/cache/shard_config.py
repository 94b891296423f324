"""What a `shard` run builds and how (`ShardConfig`), what it did (`ShardSummary`), and its cache lock.

`ShardConfig` splits into the content fields (`CONTENT_FIELDS`: they enter the pipeline id, so another
value is another cache directory), the packing fields (`PACKING_FIELDS`: recorded in manifest.json, not in
the id) and the execution fields (workers, progress, rank, ...). One `shard` run writes a cache directory at a
time: it holds `LOCK_FILENAME` there (per rank in a distributed build).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lead_stream.cache.identity import pipeline_id, pipeline_identity
from lead_stream.cache.manifest import cache_root
from lead_stream.core.errors import ConfigError
from lead_stream.core.locks import exclusive_lock

if TYPE_CHECKING:
    from lead_stream.cache.manifest_store import ManifestCounts

LOCK_FILENAME = ".shard.lock"  # held by the one `shard` run writing this cache directory
CONTENT_FIELDS = ("collections",)  # what the samples are; packing (how they are cut into shards) is not
PACKING_FIELDS = ("max_samples_per_shard", "max_shard_bytes")  # recorded in the manifest, not in the id


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    # --- selection ---
    collections: tuple[str, ...] = ("pretrain", "posttrain")  # samples = union of these bucket tables' frames
    # --- packing ---
    max_samples_per_shard: int = 1000  # close a shard after this many samples...
    max_shard_bytes: int = 384 << 20  # ...or once it reaches this size (a shard never mixes routes)
    # --- execution (not part of the pipeline id) ---
    cache_root: Path | None = None  # where cache/<pipeline_id>/ goes; None = <data_root>/cache
    workers: int | None = None  # build processes; None = os.cpu_count(); 1 = in this process
    progress: bool = True  # tqdm bar on stderr (samples/s, MB/s)
    strict: bool = False  # first unreadable frame raises LeadFormatError (else: failure row)
    retry_failed: bool = False  # rebuild every route that has failure rows (after fixing its files)
    rank: int = 0  # this machine's part of a distributed build...
    world_size: int = 1  # ...routes i (sorted) with i % world_size == rank; merge with --merge
    wait_for_lock: bool = True  # another shard run holds this cache: wait for it (False: fail naming it)

    def __post_init__(self) -> None:
        if isinstance(self.collections, str) or not self.collections:
            raise ConfigError(f"collections must be a non-empty tuple of names, got {self.collections!r}")
        if self.max_samples_per_shard < 1 or self.max_shard_bytes < 1:
            raise ConfigError("max_samples_per_shard and max_shard_bytes must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1 or None, got {self.workers}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got {self.rank=} {self.world_size=}")

    def content(self) -> dict[str, Any]:
        """The fields that change what the cache holds (they enter the pipeline id)."""
        return {
            name: list(v) if isinstance(v := getattr(self, name), tuple) else v for name in CONTENT_FIELDS
        }

    def packing(self) -> dict[str, int]:
        """How samples are cut into shards (a rebuild with other values reuses every unchanged route's shards)."""
        return {name: getattr(self, name) for name in PACKING_FIELDS}

    def cache_dir(self, data_root: Path) -> Path:
        """`<cache_root or data_root/cache>/<pipeline_id>`."""
        return (Path(self.cache_root) if self.cache_root else cache_root(data_root)) / pipeline_id(self)


@dataclass(frozen=True)
class ShardSummary:
    """What one `write_shards` / `merge_manifests` call did."""

    cache_dir: Path
    pipeline_id: str
    complete: bool  # manifest.json written (False for one rank of a distributed build)
    num_samples: int  # in the manifest (complete) or in this rank's routes
    num_shards: int
    num_failures: int
    num_routes_built: int
    num_routes_reused: int
    num_samples_built: int  # samples written by this call
    bytes_written: int  # shard bytes written by this call
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.num_samples_built / self.seconds if self.seconds > 0 else 0.0

    def one_line(self) -> str:
        state = "complete" if self.complete else "partial"
        return (
            f"{state} cache {self.cache_dir}: {self.num_samples:,} samples in "
            f"{self.num_shards:,} shards, "
            f"{self.num_failures} failures; built {self.num_routes_built} routes "
            f"({self.num_samples_built:,} samples, {self.bytes_written / 1e6:.1f} MB, "
            f"{self.samples_per_s:.1f} samples/s), reused {self.num_routes_reused}"
        )


def lock_path(cache_dir: Path, config: ShardConfig) -> Path:
    """One writer per cache directory (per rank in a distributed build; merge takes the single-build lock)."""
    if config.world_size == 1:
        return cache_dir / LOCK_FILENAME
    return cache_dir / f".shard-rank-{config.rank}-of-{config.world_size}.lock"


def cache_lock(cache_dir: Path, config: ShardConfig) -> contextlib.AbstractContextManager[None]:
    """The exclusive lock of this run's writer on `cache_dir` (waits, or fails naming the holder)."""
    return exclusive_lock(
        lock_path(cache_dir, config), wait=config.wait_for_lock, what=f"shard cache {cache_dir.name}"
    )


def unchanged_summary(cache_dir: Path, pid: str, info: dict[str, Any], started: float) -> ShardSummary:
    """The summary of a run that found nothing to do (counts from manifest.json)."""
    return ShardSummary(
        cache_dir,
        pid,
        True,
        int(info["num_samples"]),
        int(info["num_shards"]),
        int(info["num_failures"]),
        0,
        int(info.get("num_routes", 0)),
        0,
        0,
        time.perf_counter() - started,
    )


def complete_summary(cache_dir: Path, pid: str, counts: ManifestCounts) -> ShardSummary:
    """The summary of a complete manifest just written (the caller fills in what it built)."""
    return ShardSummary(
        cache_dir, pid, True, counts.num_samples, counts.num_shards, counts.num_failures, 0, 0, 0, 0, 0.0
    )


def identity_of(
    config: ShardConfig, data_root: Path, inputs: dict[str, list[int]] | None = None
) -> dict[str, Any]:
    """What manifest.json records of the build: the pipeline identity, the index files' stamps it was
    planned from (`inputs`; None = stat them now) and the packing of this build."""
    from lead_stream.cache.unchanged import input_stamps

    return {
        **pipeline_identity(config),
        "inputs": inputs if inputs is not None else input_stamps(data_root, config.collections),
        "packing": config.packing(),  # of the build that wrote the manifest; reused routes keep theirs
    }
