"""`Batch` → one block of bytes (`PackedBatch`) for the trip from a loader worker to the trainer, and back.

torch's DataLoader moves each tensor of a worker's output through its own shared-memory file, and the main
process pays a socket round trip to the worker for every one of them (the file descriptor is handed over
by multiprocessing's resource sharer): ~25 tensors cost ~10 ms per batch on the trainer's critical path.
A packed batch is a single uint8 tensor (the arena) holding every tensor of the batch at 64-byte aligned
offsets, plus a small layout, so a batch crosses with ONE descriptor; `unpack()` rebuilds the `Batch` as
views of the arena (no copy). A tensor whose memory is a permutation of a dense layout (the channels-last
`rgb`, the transposed `depth_u8`) keeps its strides; anything else is stored contiguous. Pinning a packed
batch pins the arena once (one host copy instead of ~25).

A fresh block of shared memory costs a page fault per 4 KiB page on first touch (~6 µs each on a VM: ~29 ms
for 16 MiB, against ~2 ms to refill a block already mapped), paid per batch by every worker. So a worker
packs into its own `ArenaPool`: a few arenas (its in-flight depth), reused once the trainer has let go of
them. Who holds what is a small shared table (`ArenaBoard`, worker x slot → token) made by the trainer's
process before the workers start: a worker writes a token into a slot's cell when it lends that arena, and
the trainer's process clears the cell when the last view of the batch is gone (a `weakref.finalize` on the
lease it unpacks from, so pinning, `Batch.to(device)` and dropping the batch all release it). A cell is only
cleared if it still holds the token of the batch released, so a stale release after a worker restart never
frees a slot its successor lent. A worker never writes into a lent arena; with every slot lent (a trainer
holding many batches) it packs into a fresh, unpooled block instead and counts it. A worker's read of several
batches is one packed batch; the trainer's process splits its unpacked views into the read's batches
(`collate.split_batch`), and the arena goes back once the last of them is gone.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import secrets
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from lead_stream.core.batch import Batch, RunCoded

ALIGN_BYTES = 64


class TensorSlot(NamedTuple):
    """Where one tensor lives in the arena: byte offset, dtype, shape and element strides (a tuple: it is
    pickled with every worker batch)."""

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
    lent: Lent | None = field(default=None)  # set while the arena belongs to a worker's pool
    ship_arena: bool = True  # False: the trainer's process already maps this pooled arena (`ArenaBoard`)

    def __reduce__(self) -> tuple:
        if self.lent is None:
            return (PackedBatch, (self.arena, self.tensors, self.coded_shapes, self.lists))
        # a lent arena is rebuilt as a lease in the receiving process (see `_receive_lent`); once that process
        # maps the arena, later batches in it carry only their layout (no descriptor hand-over per batch)
        arena = self.arena if self.ship_arena else None
        return (_receive_lent, (arena, self.tensors, self.coded_shapes, self.lists, self.lent))

    def unpack(self) -> Batch:
        """The `Batch`, every tensor a view of the arena (pinned views when the arena is pinned)."""
        views = _ArenaViews(self.arena)
        fields: dict[str, object] = dict(self.lists)
        for name, slot in self.tensors.items():
            if "." not in name:
                fields[name] = views.of(slot)
        for name, shape in self.coded_shapes.items():
            fields[name] = RunCoded(
                views.of(self.tensors[f"{name}.values"]), views.of(self.tensors[f"{name}.lengths"]), shape
            )
        return Batch(**fields)

    def pin_memory(self) -> PackedBatch:
        """Called by torch's DataLoader pin thread when pin_memory=True: one copy into page-locked memory."""
        return dataclasses.replace(self, arena=self.arena.pin_memory(), lent=None)


class _ArenaViews:
    """Views of one arena: one typed view per dtype, then one `as_strided` per tensor."""

    def __init__(self, arena: torch.Tensor) -> None:
        self.arena = arena
        # dtype → (typed view of the whole arena, its storage offset, element size), or None where the
        # arena cannot be viewed as that dtype
        self.typed: dict[torch.dtype, tuple[torch.Tensor, int, int] | None] = {}

    def _typed(self, dtype: torch.dtype) -> tuple[torch.Tensor, int, int] | None:
        try:  # needs the arena's length and start divisible by the element size (64-byte layout)
            typed = self.arena.view(dtype)
        except RuntimeError:
            entry = None
        else:
            entry = (typed, typed.storage_offset(), typed.element_size())
        self.typed[dtype] = entry
        return entry

    def of(self, slot: TensorSlot) -> torch.Tensor:
        entry = self.typed[slot.dtype] if slot.dtype in self.typed else self._typed(slot.dtype)
        if entry is None or slot.offset % entry[2]:
            return slot.view(self.arena)
        typed, base, size = entry
        return typed.as_strided(slot.shape, slot.strides, base + slot.offset // size)


@functools.lru_cache(maxsize=512)
def _dense_strides(shape: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of the dense layout a tensor of `shape`/`stride` is stored in: its own dim order when
    it is a permutation of a dense C-order layout, else C order (stored as a contiguous copy)."""
    probe = torch.empty_strided(shape, stride, dtype=torch.uint8, device="meta")
    order = sorted(range(len(shape)), key=lambda d: (-stride[d], -shape[d]))
    if not probe.permute(order).is_contiguous():  # overlapping or gapped view
        return tuple(torch.empty(shape, dtype=torch.uint8, device="meta").stride())
    strides = [0] * len(shape)
    step = 1
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    return tuple(strides)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES


def _layout(t: torch.Tensor, offset: int) -> TensorSlot:
    shape = tuple(t.shape)
    strides = tuple(t.stride()) if t.dim() <= 1 else _dense_strides(shape, tuple(t.stride()))
    if t.dim() == 1 and strides != (1,):
        strides = (1,)  # a strided 1-D view is stored contiguous
    return TensorSlot(offset, t.dtype, shape, strides, t.numel() * t.element_size())


def _flatten(batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, ...]], dict[str, list]]:
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
    return flat, coded_shapes, lists


def _plan(flat: dict[str, torch.Tensor]) -> tuple[dict[str, TensorSlot], int]:
    """Each tensor's slot and the arena bytes they need."""
    slots: dict[str, TensorSlot] = {}
    offset = 0
    for name, t in flat.items():
        slots[name] = _layout(t, offset)
        offset += _aligned(t.numel() * t.element_size())
    return slots, max(offset, 1)


def _fresh_shared(nbytes: int) -> torch.Tensor:
    # allocated in shared memory directly: share_memory_() would copy a fresh arena once more
    return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))


def _fill(
    arena: torch.Tensor,
    flat: dict[str, torch.Tensor],
    slots: dict[str, TensorSlot],
    *,
    in_place_ok: bool = False,
) -> None:
    """Copy each tensor into its slot of `arena`; with `in_place_ok`, a tensor already at its slot (decoded
    into the arena) is left as it is, and one elsewhere in the arena is copied out first (never overwritten)."""
    if in_place_ok:
        lo, hi = arena.data_ptr(), arena.data_ptr() + arena.numel()
        pending = {}
        for name, t in flat.items():
            if t.numel() and lo <= t.data_ptr() < hi:
                dst = slots[name].view(arena)
                if t.data_ptr() == dst.data_ptr() and t.stride() == dst.stride() and t.dtype == dst.dtype:
                    continue  # already in place
                t = t.clone()
            pending[name] = t
        flat = pending
    for name, t in flat.items():
        slots[name].view(arena).copy_(t)


def pack_batch(batch: Batch, *, shared: bool = True) -> PackedBatch:
    """Copy every tensor of `batch` into one fresh arena (in shared memory when `shared`).

    Args:
        batch: a host batch (tensors on the CPU; RunCoded rasters stay coded).
        shared: allocate the arena in shared memory, as torch would move it to the worker queue anyway.

    Returns:
        The packed batch; `unpack()` gives an equal `Batch`.
    """
    flat, coded_shapes, lists = _flatten(batch)
    slots, nbytes = _plan(flat)
    arena = _fresh_shared(nbytes) if shared else torch.empty(nbytes, dtype=torch.uint8)
    _fill(arena, flat, slots)
    return PackedBatch(arena, slots, coded_shapes, lists)


# ---------------------------------------------------------------------------------------------------
# reused arenas: the worker's pool and the trainer-side board of lent slots
# ---------------------------------------------------------------------------------------------------
_TOKEN_PID_SHIFT = 32  # token = pid << 32 | lend counter: a cell names the worker process that lent it
_GROWTH = 1.25  # an arena too small for a batch is replaced by one this much larger than needed
_ROUND_BYTES = 1 << 20
_BOARDS: weakref.WeakValueDictionary[str, ArenaBoard] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class Lent:
    """Which pooled arena a packed batch lives in, and the token its worker wrote into the board."""

    board_id: str
    worker: int
    slot: int
    token: int
    nbytes: int  # bytes of the arena the batch uses (the lease covers these)
    arena_id: int  # which allocation of the slot's arena (pid << 32 | allocation count of its worker)


class ArenaBoard:
    """The shared table of lent arenas of one loader: `flags[worker, slot]` is 0 (free) or a lend token.

    Made in the trainer's process before workers start (forked or pickled into them). In that process it
    also keeps each received arena mapped (per worker and slot, with the arena's id), so a worker sends an
    arena's descriptor once, with the first batch it writes into it, and later batches as layout only.
    """

    def __init__(self, num_workers: int, num_slots: int) -> None:
        self.board_id = secrets.token_hex(8)
        self.flags = torch.zeros((max(num_workers, 1), num_slots), dtype=torch.int64).share_memory_()
        self._mapped: dict[tuple[int, int], tuple[int, torch.Tensor]] = {}  # (worker, slot) → (id, arena)
        _BOARDS[self.board_id] = self

    @property
    def num_slots(self) -> int:
        return int(self.flags.shape[1])

    def __getstate__(self) -> dict:
        return {"board_id": self.board_id, "flags": self.flags}  # mappings stay in their process

    def __setstate__(self, state: dict) -> None:
        self.board_id, self.flags, self._mapped = state["board_id"], state["flags"], {}

    def lease(self, arena: torch.Tensor | None, lent: Lent) -> torch.Tensor:
        """A tensor over the first `lent.nbytes` of `arena` whose death hands the slot back to its worker.

        `arena` None: the batch came without it; the arena is the one this process mapped for the slot.
        """
        key = (lent.worker, lent.slot)
        if arena is None:
            arena_id, arena = self._mapped.get(key, (None, None))
            if arena_id != lent.arena_id:  # batches of a worker arrive in order: its arena came first
                raise RuntimeError(
                    f"worker {lent.worker} slot {lent.slot}: batch for arena {lent.arena_id:#x} arrived "
                    f"without it (mapped here: {arena_id})"
                )
        else:
            self._mapped[key] = (lent.arena_id, arena)  # kept mapped for the slot's next batches
        view = arena.numpy()[: lent.nbytes]  # a new ndarray: only the lease below refers to it
        weakref.finalize(view, self.release, lent.worker, lent.slot, lent.token)
        return torch.from_numpy(view)

    def release(self, worker: int, slot: int, token: int) -> None:
        """Free the slot, unless a later lend (by a restarted worker) owns it now."""
        cells = self.flags.numpy()
        if cells[worker, slot] == token:
            cells[worker, slot] = 0

    def num_lent(self) -> int:
        return int((self.flags != 0).sum())


def _receive_lent(
    arena: torch.Tensor | None,
    tensors: dict[str, TensorSlot],
    coded_shapes: dict[str, tuple[int, ...]],
    lists: dict[str, list],
    lent: Lent,
) -> PackedBatch:
    """Unpickling a lent batch in the trainer's process: its arena becomes a lease (see `ArenaBoard`)."""
    board = _BOARDS.get(lent.board_id)
    if board is None or os.getpid() == lent.token >> _TOKEN_PID_SHIFT:  # loader gone, or its own process
        if arena is None:
            raise RuntimeError(
                f"a batch of worker {lent.worker} came without its arena and no loader maps it"
            )
        return PackedBatch(arena, tensors, coded_shapes, lists, lent)
    return PackedBatch(board.lease(arena, lent), tensors, coded_shapes, lists, None)


class ArenaPool:
    """One worker's reused arenas: packs a batch into a free slot (or a fresh block when all are lent).

    `reserve` lends a slot before the batch is decoded, so the decoder can write its largest array straight
    into the arena (`prefix`); `pack` then lays the batch out there and copies only what is not in place.
    """

    def __init__(self, board: ArenaBoard, worker: int) -> None:
        self.board, self.worker, self.pid = board, worker, os.getpid()
        self._cells = board.flags[worker].numpy()  # this worker's row of the shared board
        self._arenas: list[torch.Tensor | None] = [None] * board.num_slots
        self._arena_ids = [0] * board.num_slots  # id of each slot's current arena
        self._shipped = [0] * board.num_slots  # id of the arena last sent with a batch, per slot
        self._reserved: tuple[int, int] | None = None  # (slot, token) lent to the batch being decoded
        self._last_nbytes = 0  # bytes the previous batch used: the capacity a new arena starts with
        self._lends = 0
        self.num_allocs = 0  # shared blocks allocated (start-up, growth, fallbacks)
        self.num_fallbacks = 0  # batches packed into an unpooled block because every slot was lent

    def _free_slot(self) -> int | None:
        for slot, cell in enumerate(self._cells.tolist()):
            if cell == 0 or cell >> _TOKEN_PID_SHIFT != self.pid:  # free, or lent by a previous worker
                return slot
        return None

    def _ensure(self, slot: int, nbytes: int) -> torch.Tensor:
        """The slot's arena, (re)allocated when it has fewer than `nbytes` bytes."""
        arena = self._arenas[slot]
        if arena is None or arena.numel() < nbytes:
            capacity = -(-int(nbytes * _GROWTH) // _ROUND_BYTES) * _ROUND_BYTES
            arena = self._arenas[slot] = _fresh_shared(capacity)
            self.num_allocs += 1
            self._arena_ids[slot] = (self.pid << _TOKEN_PID_SHIFT) | self.num_allocs
        return arena

    def reserve(self, nbytes: int) -> bool:
        """Lend a free slot with at least `nbytes` (or the previous batch's size) for the next `pack`.

        Returns False when every slot is lent (`pack` then uses a fresh block)."""
        if self._reserved is not None:
            return True
        slot = self._free_slot()
        if slot is None:
            return False
        self._ensure(slot, max(nbytes, self._last_nbytes))
        self._lends += 1
        token = (self.pid << _TOKEN_PID_SHIFT) | (self._lends & 0xFFFFFFFF)
        self._cells[slot] = token  # lent before it is written: the trainer releases only what it received
        self._reserved = (slot, token)
        return True

    def prefix(self, nbytes: int) -> memoryview:
        """The first `nbytes` of the reserved arena (`reserve` first), writable."""
        slot, _ = self._reserved  # type: ignore[misc]
        return memoryview(self._arenas[slot].numpy()[:nbytes])  # type: ignore[union-attr]

    def cancel(self) -> None:
        """Hand back a reserved slot whose batch will not be packed (its decode failed)."""
        if self._reserved is not None:
            slot, token = self._reserved
            self._reserved = None
            if self._cells[slot] == token:
                self._cells[slot] = 0

    def pack(self, batch: Batch) -> PackedBatch:
        """`batch` packed into a pooled arena (lent until the trainer releases it)."""
        flat, coded_shapes, lists = _flatten(batch)
        slots, nbytes = _plan(flat)
        self._last_nbytes = max(self._last_nbytes, nbytes)
        if not self.reserve(nbytes):
            self.num_fallbacks += 1
            self.num_allocs += 1
            arena = _fresh_shared(nbytes)
            _fill(arena, flat, slots)
            return PackedBatch(arena, slots, coded_shapes, lists)
        (slot, token), self._reserved = self._reserved, None  # type: ignore[misc]
        old = self._arenas[slot]
        arena = self._ensure(slot, nbytes)
        # what was decoded into the old arena of a grown slot is copied over from it (still alive here)
        _fill(arena, flat, slots, in_place_ok=arena is old)
        arena_id = self._arena_ids[slot]
        ship = self._shipped[slot] != arena_id  # the trainer's process has not received this arena yet
        self._shipped[slot] = arena_id
        lent = Lent(self.board.board_id, self.worker, slot, token, nbytes, arena_id)
        return PackedBatch(arena, slots, coded_shapes, lists, lent, ship_arena=ship)
