"""`LoaderConfig`: every setting of `make_loader`, the same on every rank (rank and world size are arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lead_stream.core.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """Settings of `make_loader`; the same on every rank (rank and world size are arguments)."""

    # --- plan ---
    batch_size: int = 8  # GLOBAL batch (all ranks); each rank gets batch_size // world_size
    seed: int = 0  # plan + perturbation seed
    collection: str = "pretrain"  # bucket table <data_root>/index/buckets/<collection>.parquet
    mixture: dict[str, float] | None = None  # bucket -> rate (LEAD meaning); None keeps the table's rates
    epoch_size: int | None = (
        None  # None: collection size; 0: LEAD's Σ int(len·rate); >0: cut/repeat (sequential: cut)
    )
    sample_with_replacement: bool = False  # rate > 1: LEAD's draws with replacement (default: permutations)
    perturbation_prob: float = 0.5  # chance a sample serves its perturbated variant
    order: Literal["shuffled", "sequential"] = "shuffled"  # sequential: each frame once, (route, frame) order
    buckets: tuple[str, ...] | None = None  # only these buckets of the collection; None = all
    exclude_collection: str | None = None  # leave out every frame of this collection (held-out frames)...
    exclude_buckets: tuple[str, ...] | None = None  # ...or only of these of its buckets; None = all
    # --- reading ---
    num_workers: int = 2  # DataLoader worker processes per rank (0 = read in the main process)
    persistent_workers: bool = True  # keep workers across epochs (new epochs still reach them)
    prefetch_factor: int = 2  # reads in flight per worker (each of batches_per_read batches)
    batches_per_read: int | None = None  # batches read and handed over at once; None: >= MIN_READ_SAMPLES
    pin_memory: bool = False  # pin batches for faster host→GPU copies
    reuse_shared_memory: bool = (
        True  # workers pack into a reused pool of shared arenas (False: fresh per batch)
    )
    max_open_shards: int = 4  # open shard files kept per worker (LRU)
    shard_url: str | None = None  # remote shards: template with "{shard}", e.g. "pipe:cat /x/{shard}"
    local_cache_dir: str | None = None  # download remote shards here (whole, atomically) before seeking
    locality_window: int = 0  # >0: each window of this many global batches reads few shards (cold/remote)
    # --- errors ---
    on_bad_sample: Literal["raise", "skip"] = "raise"  # skip = repeat the next good sample of the batch

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batches_per_read is not None and self.batches_per_read < 1:
            raise ConfigError(f"batches_per_read must be None or >= 1, got {self.batches_per_read}")
        if self.num_workers < 0 or self.prefetch_factor < 1 or self.max_open_shards < 1:
            raise ConfigError("num_workers must be >= 0, prefetch_factor and max_open_shards >= 1")
        if not 0.0 <= self.perturbation_prob <= 1.0:
            raise ConfigError(f"perturbation_prob must be in [0, 1], got {self.perturbation_prob}")
        if self.epoch_size is not None and self.epoch_size < 0:
            raise ConfigError(f"epoch_size must be None, 0 or > 0, got {self.epoch_size}")
        if self.locality_window < 0:
            raise ConfigError(f"locality_window must be >= 0, got {self.locality_window}")
        if self.on_bad_sample not in ("raise", "skip"):
            raise ConfigError(f"on_bad_sample must be 'raise' or 'skip', got {self.on_bad_sample!r}")
        if self.order not in ("shuffled", "sequential"):
            raise ConfigError(f"order must be 'shuffled' or 'sequential', got {self.order!r}")
        if self.buckets is not None and not self.buckets:
            raise ConfigError("buckets must name at least one bucket (None = all)")
        if self.shard_url is not None and "{shard}" not in self.shard_url:
            raise ConfigError(f"shard_url must contain '{{shard}}', got {self.shard_url!r}")


MIN_READ_SAMPLES = 32  # a read of fewer samples pays its fixed costs (~1-2 ms a read on 2 cores) too often


def read_batches(config: LoaderConfig, world_size: int) -> int:
    """Per-rank batches in one read: `batches_per_read`, else enough for `MIN_READ_SAMPLES` samples.

    A read's fixed costs (planning its rows, checking and wrapping the batch, packing it, the DataLoader's
    round trip, unpacking in the trainer) are ~1-2 ms on a 2-core VM whatever its size, i.e. ~0.2 ms a sample
    at 8 samples; four batches of 8 read together pay them once. Each batch still holds exactly its own samples.
    """
    if config.batches_per_read is not None:
        return config.batches_per_read
    per_rank = max(config.batch_size // max(world_size, 1), 1)
    return -(-MIN_READ_SAMPLES // per_rank)
