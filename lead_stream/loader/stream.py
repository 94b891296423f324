"""Loader worker side: epoch plan → padded global batches → this (rank, worker)'s batches as `Batch`es.

`build_epoch` pads the plan of `sampling.epoch_plan` to whole global batches and draws each slot's
sensor variant; the rank's process builds it once per epoch and copies its three slot arrays into a
`SharedPlan` (shared-memory tensors the workers inherit), so no worker ever recomputes a plan.
`PlanStream` is the torch IterableDataset a DataLoader worker iterates: it reads the current (epoch,
start batch, slot count) from a shared control block at every iteration start, so persistent workers
follow `set_epoch`/`set_mixture`, views the shared slot arrays, and yields `(Batch, info)` for each of
its reads (`sampling.worker_reads`: k consecutive global batches, read c ≡ worker mod num_workers, from the
resume point on): one `Batch` of the read's k per-rank batches back to back, its samples read grouped by
shard, that the rank's process splits into its batches (`collate.split_batch`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lz4.block
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lead_stream.core.batch import Batch
from lead_stream.core.constants import RGB_HEIGHT_PX, RGB_WIDTH_PX
from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.loader import sampling
from lead_stream.loader.catalog import Catalog
from lead_stream.loader.collate import BatchBuffers, BufferPool
from lead_stream.loader.config import read_batches
from lead_stream.loader.packed import ArenaBoard, ArenaPool, pack_batch
from lead_stream.loader.tar_reader import ShardFiles, split_members

if TYPE_CHECKING:
    from lead_stream.loader.config import LoaderConfig

_LOG = logging.getLogger(__name__)
_DECODE_ERRORS = (
    KeyError,
    ValueError,
    TypeError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
    lz4.block.LZ4BlockError,
)


@dataclass(frozen=True)
class Epoch:
    """One epoch's padded plan as the workers use it."""

    plan: sampling.EpochPlan
    slot_rows: np.ndarray  # (num_global_batches * G,) manifest row of each padded slot
    slot_bucket: np.ndarray  # (same,) bucket index
    perturbated: np.ndarray  # (same,) bool
    num_batches: int  # global batches == batches per rank
    plan_len: int  # slots before padding (len(plan)); later slots are pads


class SharedPlan:
    """The padded slot arrays of the current epoch in shared memory (written by the rank, read by workers).

    Capacity is fixed when the workers fork; `fits` says whether an epoch needs a larger block (the loader
    then starts new workers). Memory: 17 bytes per slot, once per rank.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.rows = torch.zeros(self.capacity, dtype=torch.int64).share_memory_()  # (C,) manifest rows
        self.bucket = torch.zeros(self.capacity, dtype=torch.int32).share_memory_()  # (C,) bucket index
        self.perturbated = torch.zeros(self.capacity, dtype=torch.bool).share_memory_()  # (C,)

    def fits(self, epoch: Epoch) -> bool:
        return epoch.slot_rows.shape[0] <= self.capacity

    def write(self, epoch: Epoch) -> None:
        n = epoch.slot_rows.shape[0]
        self.rows[:n] = torch.from_numpy(np.ascontiguousarray(epoch.slot_rows, dtype=np.int64))
        self.bucket[:n] = torch.from_numpy(np.ascontiguousarray(epoch.slot_bucket, dtype=np.int32))
        self.perturbated[:n] = torch.from_numpy(np.ascontiguousarray(epoch.perturbated, dtype=np.bool_))

    def view(self, num_slots: int, num_batches: int, plan_len: int) -> Epoch:
        """The epoch as the worker uses it: views of the shared arrays, no copy (plan = None)."""
        return Epoch(
            None,  # type: ignore[arg-type]
            self.rows[:num_slots].numpy(),
            self.bucket[:num_slots].numpy(),
            self.perturbated[:num_slots].numpy(),
            num_batches,
            plan_len,
        )


@dataclass(frozen=True)
class WorkerError:
    """A bad sample seen in a worker; the main process re-raises it as LeadFormatError (path kept)."""

    path: str
    problem: str


@dataclass
class _Spec:
    epoch: int
    start: int
    mixture: dict[str, float] | None
    num_slots: int
    num_batches: int
    plan_len: int


def build_epoch(
    catalog: Catalog, config: LoaderConfig, *, epoch: int, mixture: Mapping[str, float] | None
) -> Epoch:
    """The padded plan of `epoch` (pure function of catalog, config, epoch and mixture).

    Raises:
        ConfigError: the mixture names an unknown bucket, has a negative rate, or selects no sample.
    """
    size = config.epoch_size if config.epoch_size is not None else catalog.collection_size
    try:
        if config.order == "sequential":  # evaluation: each frame once, in order (epoch_size = a subset)
            plan = sampling.sequential_plan(
                catalog.bucket_rows, catalog.sample_key, max_samples=config.epoch_size or None
            )
        else:
            rates = sampling.resolve_rates(catalog.bucket_names, catalog.bucket_rates, mixture)
            plan = sampling.epoch_plan(
                catalog.bucket_rows,
                rates,
                seed=config.seed,
                epoch=epoch,
                epoch_size=size or None,
                with_replacement=config.sample_with_replacement,
            )
    except ValueError as err:
        raise ConfigError(f"collection {config.collection!r}: {err}") from None
    if config.locality_window:
        window = config.locality_window * config.batch_size
        plan = sampling.localize(plan, catalog.sample_shard, window=window, seed=config.seed, epoch=epoch)
    slots = sampling.padded_slots(len(plan), config.batch_size)
    draws = sampling.perturbation_draws(
        slots.shape[0], prob=config.perturbation_prob, seed=config.seed, epoch=epoch
    )
    return Epoch(
        plan, plan.rows[slots], plan.bucket_idx[slots], draws, slots.shape[0] // config.batch_size, len(plan)
    )


def _peak_rss_mb() -> float:
    """Peak resident set of this process in MB (ru_maxrss; a forked worker starts at its parent's RSS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_key(epoch: int, mixture: Mapping[str, float] | None) -> str:
    return json.dumps([epoch, mixture], sort_keys=True)


class PlanStream(IterableDataset):
    """Yields (Batch, info) for this rank's batches that belong to the current worker."""

    def __init__(
        self,
        catalog: Catalog,
        config: LoaderConfig,
        locations: list[str],
        rank: int,
        world_size: int,
        control: torch.Tensor,
        shared: SharedPlan | None = None,
        board: ArenaBoard | None = None,
    ) -> None:
        self.catalog, self.config, self.locations = catalog, config, locations
        self.rank, self.world_size, self.control, self.board = rank, world_size, control, board
        self.shared = shared  # the plan's slot arrays for workers (None: iterate in-process only)
        self._files: ShardFiles | None = None
        self._arenas: ArenaPool | None = None
        self._pool = BufferPool()
        self._files_pid = 0
        self._rss_start_mb = 0.0
        self._epochs: dict[str, Epoch] = {}

    def seed_epoch_cache(self, epoch: int, mixture: Mapping[str, float] | None, built: Epoch) -> None:
        """Hand the main process's plan to in-process iteration (num_workers=0, or workers forked later)."""
        self._epochs = {epoch_key(epoch, mixture): built}

    def _read_control(self) -> _Spec:
        raw = self.control.numpy().tobytes().split(b"\0", 1)[0]
        spec = json.loads(raw)
        return _Spec(
            spec["epoch"],
            spec["start"],
            spec["mixture"],
            spec["num_slots"],
            spec["num_batches"],
            spec["plan_len"],
        )

    def __iter__(self) -> Iterator[tuple[Any, dict]]:
        spec = self._read_control()
        info = get_worker_info()
        key = epoch_key(spec.epoch, spec.mixture)
        if info is not None and self.shared is not None:  # a worker: the rank's plan, shared
            epoch = self.shared.view(spec.num_slots, spec.num_batches, spec.plan_len)
        else:
            if key not in self._epochs:
                self._epochs = {
                    key: build_epoch(self.catalog, self.config, epoch=spec.epoch, mixture=spec.mixture)
                }
            epoch = self._epochs[key]
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        if self._files is None or self._files_pid != os.getpid():  # never share handles across a fork
            self._files_pid = os.getpid()
            self._rss_start_mb = _peak_rss_mb()
            self._pool = BufferPool()  # never refill arrays a parent process handed out
            self._arenas = ArenaPool(self.board, worker) if self.board is not None and info else None
            self._files = ShardFiles(
                self.locations,
                local_cache_dir=self.config.local_cache_dir,
                max_open=self.config.max_open_shards,
            )
        per_rank = self.config.batch_size // self.world_size
        for read in sampling.worker_reads(
            epoch.num_batches,
            start=spec.start,
            worker=worker,
            num_workers=num_workers,
            batches_per_read=read_batches(self.config, self.world_size),
        ):
            slots = sampling.read_slots(
                read, global_batch=self.config.batch_size, rank=self.rank, world_size=self.world_size
            )
            try:
                batch, skipped, run_bounds = self._load(epoch, slots, per_rank)
            except LeadFormatError as err:  # re-raised by the main process with its path intact
                if self._arenas is not None:
                    self._arenas.cancel()
                yield WorkerError(str(err.path), err.problem), {}
                return
            pads = (slots >= epoch.plan_len).reshape(len(read), per_rank).sum(axis=1).tolist()
            rss_mb = _peak_rss_mb()
            yield (
                self._pack(batch) if info is not None else batch,  # a worker's read crosses as one block
                {
                    "worker": worker,
                    "batch_size": per_rank,
                    "run_bounds": run_bounds,
                    "skipped": skipped,
                    "pads": pads,
                    "peak_rss_mb": rss_mb,
                    "rss_growth_mb": rss_mb - self._rss_start_mb,
                    "shard_opens": self._files.num_opens,
                    "shm_allocs": self._arenas.num_allocs if self._arenas else -1,
                    "shm_fallbacks": self._arenas.num_fallbacks if self._arenas else 0,
                },
            )

    def _pack(self, batch: Batch) -> Any:
        """A worker's batch as one shared block: a reused arena of its pool, or a fresh one."""
        return self._arenas.pack(batch) if self._arenas is not None else pack_batch(batch)

    def _arena_rgb(self, size: int) -> memoryview | None:
        """In a worker with an arena pool: the reserved arena's first bytes, where the batch's images decode
        (`pack` lays `rgb` out first, so they are already in place there); None otherwise."""
        nbytes = size * RGB_HEIGHT_PX * RGB_WIDTH_PX * 3
        if self._arenas is None or not self._arenas.reserve(nbytes):
            return None
        return self._arenas.prefix(nbytes)

    def _load(
        self, epoch: Epoch, slots: np.ndarray, batch_size: int
    ) -> tuple[Batch, int, dict[str, list[int]]]:
        """Read a read's samples (its batches' slots, batch after batch), decode every image, then every array
        group (two phases: see `BatchBuffers.fill_image`); a bad sample is raised or, by policy, replaced by a
        good one of its own batch. Returns the read's batch, the samples replaced, and where each batch's runs
        start (`split_batch`)."""
        cat = self.catalog
        rows = epoch.slot_rows[slots]
        buffers = self._pool.take(len(rows), rgb=self._arena_rgb(len(rows)))
        order = np.lexsort((cat.sample_offset[rows], cat.sample_shard[rows]))  # group reads by shard
        shards, offsets = cat.sample_shard[rows].tolist(), cat.sample_offset[rows].tolist()
        sizes, flags = cat.sample_size[rows].tolist(), epoch.perturbated[slots].tolist()
        bad: set[int] = set()
        members: dict[int, dict[str, memoryview]] = {}
        order = order.tolist()
        for i in order:
            try:
                members[i] = self._members(shards[i], offsets[i], sizes[i], int(rows[i]))
            except LeadFormatError as err:
                self._skip(bad, i, err)
        for phase in (buffers.fill_image, buffers.fill_arrays):
            for i in order:
                if i in bad:
                    continue
                try:
                    self._decode(phase, buffers, i, members[i], flags[i], shards[i], int(rows[i]))
                except LeadFormatError as err:
                    self._skip(bad, i, err)
        for i, problem in buffers.check_rows().items():
            if i not in bad:
                self._skip(
                    bad,
                    i,
                    LeadFormatError(
                        self.locations[shards[i]],
                        f"sample {cat.key(int(rows[i]))!r} member 'arrays.lz4': {problem}",
                    ),
                )
        buffers.frame_idx[:] = cat.sample_frame[rows]
        buffers.bucket_idx[:] = epoch.slot_bucket[slots]
        buffers.route_id = [cat.route_id(r) for r in cat.sample_route[rows].tolist()]
        if bad:
            for first in range(0, len(rows), batch_size):
                self._replace_bad(buffers, rows, range(first, first + batch_size), bad)
        batch = buffers.to_batch()
        members.clear()  # the batch holds copies: the shard views may go now
        return batch, len(bad), buffers.runs.sample_bounds(batch_size)

    def _replace_bad(self, buffers: BatchBuffers, rows: np.ndarray, batch: range, bad: set[int]) -> None:
        """Copy over each bad row of one batch the next good row of the same batch (cyclically)."""
        good = [i for i in batch if i not in bad]
        if not good:
            raise LeadFormatError(
                self.locations[self.catalog.sample_shard[rows[batch.start]]],
                f"every sample of a batch is bad (first {self.catalog.key(int(rows[batch.start]))!r})",
            )
        for i in batch:
            if i in bad:
                buffers.copy_row(i, next((j for j in good if j > i), good[0]))

    def _skip(self, bad: set[int], i: int, err: LeadFormatError) -> None:
        """A bad sample: raise (strict policy) or log it and mark row i for replacement (skip policy)."""
        if self.config.on_bad_sample == "raise":
            raise err
        _LOG.warning("skipping bad sample (repeating a good one of its batch): %s", err)
        bad.add(i)

    def _members(self, shard: int, offset: int, size: int, row: int) -> dict[str, memoryview]:
        # views into the shard's mapping (or a fresh copy where it cannot be mapped): valid for the batch
        blob = self._files.read_stable(shard, offset, size)
        return split_members(blob, shard=self.locations[shard], key=self.catalog.key(row), check_sums=False)

    def _decode(
        self,
        phase: Callable[..., None],
        buffers: BatchBuffers,
        i: int,
        members: dict[str, memoryview],
        perturbated: bool,
        shard: int,
        row: int,
    ) -> None:
        try:
            phase(i, members, perturbated=perturbated)
        except _DECODE_ERRORS as err:
            raise LeadFormatError(
                self.locations[shard],
                f"sample {self.catalog.key(row)!r} member {buffers.current_member!r}: "
                f"{type(err).__name__}: {err}",
            ) from err
