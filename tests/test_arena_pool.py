"""Worker batches reuse a small pool of shared arenas, and a batch the trainer holds is never rewritten (#16)."""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from lead_stream.core.batch import BATCH_TENSOR_FIELDS, Batch
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.loader.config import MIN_READ_SAMPLES
from lead_stream.loader.packed import ArenaBoard, ArenaPool
from lead_stream.model.random_batch import random_batch

# 16 batches, 8 per worker, one arena per batch (reads of several batches: the read tests below)
CONFIG = dict(batch_size=4, epoch_size=64, seed=5, prefetch_factor=2, batches_per_read=1)


def _dense(batch: Batch) -> dict[str, torch.Tensor]:
    dense = batch.dense()
    return {name: getattr(dense, name).clone() for name in BATCH_TENSOR_FIELDS}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for name in BATCH_TENSOR_FIELDS:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def in_process(sharded_root: Path) -> list[dict[str, torch.Tensor]]:
    loader = make_loader(sharded_root, config=LoaderConfig(num_workers=0, **CONFIG))
    loader.set_epoch(0)
    return [_dense(batch) for batch in loader]


def test_workers_reuse_their_arenas_across_epochs_and_serve_the_same_batches_16(
    sharded_root: Path, in_process: list[dict[str, torch.Tensor]]
) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(num_workers=2, persistent_workers=True, **CONFIG))
    for _ in range(2):
        loader.set_epoch(0)  # the same epoch twice: the second pass must reuse the pool, not grow it
        served = [_dense(batch) for batch in loader]  # each batch dropped right after its copy
        assert len(served) == len(in_process)
        for a, b in zip(in_process, served):
            _assert_same(a, b)
    tele = loader.telemetry()
    slots = CONFIG["prefetch_factor"] + 2
    assert tele["shm_fallbacks_per_worker"] == 0
    # 16 batches per worker over the two passes: allocations happen only while the pool fills (and grows)
    assert 1 <= tele["shm_allocs_per_worker"] <= slots + 2 < 16
    assert loader._board.num_lent() <= 2 * slots  # nothing leaks once batches are dropped


def test_a_trainer_holding_every_batch_gets_intact_batches_from_fresh_blocks_16(
    sharded_root: Path, in_process: list[dict[str, torch.Tensor]]
) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(num_workers=2, persistent_workers=False, **CONFIG))
    loader.set_epoch(0)
    held = list(loader)  # every batch stays referenced: no pooled arena is ever handed back
    for a, b in zip(in_process, held):
        _assert_same(a, _dense(b))
    assert loader.telemetry()["shm_fallbacks_per_worker"] > 0  # fresh blocks once the pool was all lent


def test_held_batches_survive_a_killed_worker_and_its_successors_16(
    sharded_root: Path, in_process: list[dict[str, torch.Tensor]]
) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(num_workers=2, persistent_workers=True, **CONFIG))
    loader.set_epoch(0)
    iterator = iter(loader)
    held = [next(iterator) for _ in range(3)]
    copies = [_dense(batch) for batch in held]
    workers = multiprocessing.active_children()
    assert len(workers) >= 2
    # torch's SIGCHLD handler raises in the main thread at any bytecode after the kill, so the kill sits inside
    # the raises block; the dead worker is then reaped and the iterator shut down, or a later SIGCHLD (any child's)
    # would raise the same error again wherever the test happens to be.
    with pytest.raises(RuntimeError, match="(?i)worker"):
        os.kill(workers[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            next(iterator)
    multiprocessing.active_children()  # reaps the killed worker: torch's handler no longer sees it
    del iterator
    gc.collect()
    loader.set_epoch(0)  # fresh workers (new pids) write into their own pools
    again = [_dense(batch) for batch in loader]
    for a, b in zip(in_process, again):
        _assert_same(a, b)
    for batch, copy in zip(held, copies):  # the old arenas were never rewritten
        _assert_same(copy, _dense(batch))


def test_a_stale_release_never_frees_the_slot_of_a_restarted_worker_16() -> None:
    board = ArenaBoard(1, 2)
    first = ArenaPool(board, 0)
    lent_first = first.pack(random_batch(2, seed=0)).lent
    successor = ArenaPool(board, 0)
    successor.pid = first.pid + 1  # another process in the same worker position (a restart)
    lent_next = successor.pack(random_batch(2, seed=1)).lent
    assert lent_next.slot == lent_first.slot  # the old lend names a dead process: its slot is reusable
    board.release(0, lent_first.slot, lent_first.token)  # the trainer drops the old batch late
    assert board.flags[0, lent_next.slot] == lent_next.token  # still lent to the successor
    board.release(0, lent_next.slot, lent_next.token)
    assert board.num_lent() == 0


@pytest.mark.parametrize("batches_per_read", [3, None], ids=["reads_of_3", "default_reads"])
def test_reads_of_several_batches_serve_the_same_batches_in_one_arena_each_16(
    sharded_root: Path, in_process: list[dict[str, torch.Tensor]], batches_per_read: int | None
) -> None:
    config = {**CONFIG, "batches_per_read": batches_per_read}
    loader = make_loader(sharded_root, config=LoaderConfig(num_workers=2, persistent_workers=True, **config))
    per_read = batches_per_read or MIN_READ_SAMPLES // 4  # None: enough batches of 4 for MIN_READ_SAMPLES
    for _ in range(2):
        loader.set_epoch(0)
        arenas = []
        for a, batch in zip(in_process, loader, strict=True):  # each batch dropped after its check
            assert batch.size == 4
            _assert_same(a, _dense(batch))
            arenas.append(batch.rgb.untyped_storage().data_ptr())
        # the batches of one read are views of one arena, and consecutive reads come from alternate workers
        reads = [arenas[i : i + per_read] for i in range(0, len(arenas), per_read)]
        assert all(len(set(read)) == 1 for read in reads)
        assert all(a[0] != b[0] for a, b in itertools.pairwise(reads))
    tele = loader.telemetry()
    assert tele["shm_fallbacks_per_worker"] == 0 and tele["batches"] == 2 * len(in_process)
    assert loader._board.num_lent() <= 2 * loader._board.num_slots


def test_a_read_arena_goes_back_only_when_its_last_batch_is_dropped_16(sharded_root: Path) -> None:
    config = {**CONFIG, "batches_per_read": 2}
    loader = make_loader(sharded_root, config=LoaderConfig(num_workers=1, persistent_workers=True, **config))
    loader.set_epoch(0)
    iterator = iter(loader)
    first, second = next(iterator), next(iterator)  # one read: both views of the same lent arena
    board = loader._board
    ptr = first.rgb.untyped_storage().data_ptr()
    assert second.rgb.untyped_storage().data_ptr() == ptr
    ((worker, slot),) = [key for key, (_, arena) in board._mapped.items() if arena.data_ptr() == ptr]
    token = int(board.flags[worker, slot])
    assert token != 0
    del first
    gc.collect()
    assert int(board.flags[worker, slot]) == token  # the second batch still uses the arena
    del second
    third = next(iterator)  # the loader lets go of the batch it yielded last when asked for the next one
    gc.collect()
    assert int(board.flags[worker, slot]) != token  # handed back (and maybe lent again, with a new token)
    del third, iterator
