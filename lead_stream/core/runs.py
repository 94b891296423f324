"""Run-length coding of label rasters: (H, W) uint8 ↔ (values, lengths) in C order.

Semantic maps are large regions of one class, so a 384 x 1152 semantic image (442 KB) is a few thousand
runs. The cache stores label rasters this way (smaller than lz4 over the raster, and a reader copies a few
KB instead of writing the whole raster), and the loader hands the runs to the trainer, which expands them
where the batch lives (`expand_runs_torch` on the GPU; `expand_runs` with numpy on the host).

    values  (n,) uint8   the label of each run
    lengths (n,) uint16  its length in pixels, >= 1; runs longer than 65535 are split, so the codes of one
                         raster are unique, and sum(lengths) == H * W

Stored, the lengths are split in two (`split_lengths`): `short` (n,) uint8 = min(length, 255), and `long`
(m,) uint16 = the lengths >= 255 in order (255 marks "take the next long one"). Most runs are short, so this
is a third fewer bytes than uint16 lengths before compression and ~5% fewer after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where the runs are expanded: `shard` never loads it (~3-7 s)
    import torch

MAX_RUN = np.iinfo(np.uint16).max


def encode_runs(raster: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) (or any shape) uint8 → (values (n,) uint8, lengths (n,) uint16), C order."""
    flat = np.ascontiguousarray(raster, dtype=np.uint8).reshape(-1)
    if flat.size == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint16)
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.empty(starts.size + 2, np.int64)
    bounds[0], bounds[1:-1], bounds[-1] = 0, starts, flat.size
    lengths = np.diff(bounds)
    values = flat[bounds[:-1]]
    if int(lengths.max()) <= MAX_RUN:
        return values, lengths.astype(np.uint16)
    pieces = -(-lengths // MAX_RUN)  # split long runs into pieces of <= 65535
    split_values = np.repeat(values, pieces)
    split_lengths = np.full(split_values.size, MAX_RUN, np.int64)
    last = np.cumsum(pieces) - 1
    split_lengths[last] = lengths - (pieces - 1) * MAX_RUN
    return split_values, split_lengths.astype(np.uint16)


LONG = 255  # a short length of 255 means: the run's length is the next entry of `long`


def split_lengths(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) uint16 lengths → (short (n,) uint8, long (m,) uint16), see the module doc."""
    lengths = np.asarray(lengths, dtype=np.uint16)
    return np.minimum(lengths, LONG).astype(np.uint8), lengths[lengths >= LONG]


def join_lengths(short: np.ndarray, long: np.ndarray) -> np.ndarray:
    """Inverse of `split_lengths` → (n,) int32.

    Raises:
        ValueError: the number of 255 markers differs from the number of long lengths.
    """
    lengths = short.astype(np.int32)
    marks = np.flatnonzero(short == LONG)
    if marks.size != long.shape[0]:
        raise ValueError(f"{marks.size} long-run markers but {long.shape[0]} long lengths")
    lengths[marks] = long
    return lengths


def check_runs(values: np.ndarray, lengths: np.ndarray, size: int) -> None:
    """Raise ValueError unless the runs are well formed and cover exactly `size` pixels."""
    if values.shape != lengths.shape or values.ndim != 1:
        raise ValueError(f"run values {values.shape} and lengths {lengths.shape} must be equal 1-D shapes")
    total = int(lengths.sum(dtype=np.int64))
    if total != size:
        raise ValueError(f"runs cover {total} pixels, expected {size}")


def expand_runs(values: np.ndarray, lengths: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `encode_runs` for one raster (numpy); zero-length padding runs are allowed."""
    size = int(np.prod(shape))
    check_runs(values, lengths, size)
    return np.repeat(values, lengths.astype(np.intp)).reshape(shape)


def expand_runs_torch(values: torch.Tensor, lengths: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N,) uint8 values + (N,) integer lengths → a `shape` uint8 tensor on their device.

    The runs of all samples are back to back, so the whole batch is one expansion; the lengths must sum to
    prod(shape) (the loader checks each sample's sum when it builds the batch). On a CPU tensor the expansion
    runs through numpy (torch's CPU repeat_interleave is ~20x slower); elsewhere it is one `repeat_interleave`
    with a known output size, so it never synchronises the device.
    """
    import torch

    size = int(np.prod(shape))
    if values.device.type == "cpu":
        flat = np.repeat(values.reshape(-1).numpy(), lengths.reshape(-1).numpy().astype(np.intp))
        if flat.size != size:
            raise ValueError(f"runs cover {flat.size} pixels, expected {size}")
        return torch.from_numpy(flat).view(shape)
    flat = torch.repeat_interleave(values.reshape(-1), lengths.reshape(-1).long(), output_size=size)
    return flat.view(shape)
