"""Stage 4, loader: shard cache + bucket table → `Batch`es for one rank (seeded, resumable, DDP-exact).

`make_loader` composes `catalog` (manifest ⋈ bucket table) → `sampling` (the epoch plan, rank and worker
slices) → `stream` (reads through `tar_reader`, decode and `collate` into a `Batch`) → `packed` (one
shared-memory block per worker batch). Its settings are `config.LoaderConfig`.
"""

from lead_stream.loader.config import LoaderConfig
from lead_stream.loader.stream import build_epoch
from lead_stream.loader.streaming import StreamingLoader, make_loader

__all__ = ["LoaderConfig", "StreamingLoader", "build_epoch", "make_loader"]
