"""`Batch` → one block of bytes (`PackedBatch`) for the trip from a loader worker to the trainer, and back.

torch's DataLoader moves each tensor of a worker's output through its own shared-memory file, and the main
process pays a socket round trip to the worker for every one of them (the file descriptor is handed over
by multiprocessing's resource sharer): ~25 tensors cost ~10 ms per batch on the trainer's critical path.
A packed batch is a single uint8 tensor (the arena) holding every tensor of the batch at 64-byte aligned
offsets, plus a small layout, so a batch crosses with ONE descriptor; `unpack()` rebuilds the `Batch` as
views of the arena (no copy). A tensor whose memory is a permutation of a dense layout (the channels-last
`rgb`, the transposed `depth_u8`) keeps its strides; anything else is stored contiguous. Pinning a packed
batch pins the arena once (one host copy instead of ~25).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from lead_stream.core.batch import Batch, RunCoded

ALIGN_BYTES = 64


@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor lives in the arena: byte offset, dtype, shape and element strides."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    nbytes: int  # bytes the view covers (numel x element size: the layout is dense)

    def view(self, arena: torch.Tensor) -> torch.Tensor:
        flat = arena[self.offset : self.offset + self.nbytes].view(self.dtype)
        return flat.as_strided(self.shape, self.strides)


@dataclass
class PackedBatch:
    """A `Batch` as one uint8 arena (1-D, shared or pinned as a whole) and the layout to view it."""

    arena: torch.Tensor  # (nbytes,) uint8
    tensors: dict[str, TensorSlot]  # field → slot; RunCoded fields as "<field>.values/.lengths"
    coded_shapes: dict[str, tuple[int, ...]]  # RunCoded field → its dense shape
    lists: dict[str, list]  # non-tensor fields (route_id)

    def unpack(self) -> Batch:
        """The `Batch`, every tensor a view of the arena (pinned views when the arena is pinned)."""
        fields: dict[str, object] = dict(self.lists)
        for name, shape in self.coded_shapes.items():
            fields[name] = RunCoded(
                self.tensors[f"{name}.values"].view(self.arena),
                self.tensors[f"{name}.lengths"].view(self.arena),
                shape,
            )
        for name, slot in self.tensors.items():
            if "." not in name:
                fields[name] = slot.view(self.arena)
        return Batch(**fields)

    def pin_memory(self) -> PackedBatch:
        """Called by torch's DataLoader pin thread when pin_memory=True: one copy into page-locked memory."""
        return dataclasses.replace(self, arena=self.arena.pin_memory())


def _dense_order(t: torch.Tensor) -> list[int] | None:
    """Dims from outermost to innermost when `t` is a permutation of a dense C-order layout, else None."""
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), -t.shape[d]))
    return order if t.permute(order).is_contiguous() else None


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES


def _layout(t: torch.Tensor, offset: int) -> TensorSlot:
    order = _dense_order(t)
    if order is None:  # overlapping or gapped view: stored as a contiguous copy
        strides = torch.empty(t.shape, dtype=t.dtype, device="meta").stride()
    else:
        strides = [0] * t.dim()
        step = 1
        for d in reversed(order):
            strides[d] = step
            step *= t.shape[d]
    return TensorSlot(offset, t.dtype, tuple(t.shape), tuple(strides), t.numel() * t.element_size())


def pack_batch(batch: Batch, *, shared: bool = True) -> PackedBatch:
    """Copy every tensor of `batch` into one arena (in shared memory when `shared`, for a worker's queue).

    Args:
        batch: a host batch (tensors on the CPU; RunCoded rasters stay coded).
        shared: allocate the arena in shared memory, as torch would move it to the worker queue anyway.

    Returns:
        The packed batch; `unpack()` gives an equal `Batch`.
    """
    flat: dict[str, torch.Tensor] = {}
    coded_shapes: dict[str, tuple[int, ...]] = {}
    lists: dict[str, list] = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, RunCoded):
            flat[f"{f.name}.values"], flat[f"{f.name}.lengths"] = value.values, value.lengths
            coded_shapes[f.name] = tuple(value.shape)
        elif isinstance(value, torch.Tensor):
            flat[f.name] = value
        else:
            lists[f.name] = list(value)
    slots: dict[str, TensorSlot] = {}
    offset = 0
    for name, t in flat.items():
        slots[name] = _layout(t, offset)
        offset += _aligned(t.numel() * t.element_size())
    if shared:  # allocated in shared memory directly: share_memory_() would copy a fresh arena once more
        arena = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(max(offset, 1)))
    else:
        arena = torch.empty(max(offset, 1), dtype=torch.uint8)
    for name, t in flat.items():
        slots[name].view(arena).copy_(t)
    return PackedBatch(arena, slots, coded_shapes, lists)
