"""A worker's batch crosses to the trainer as one shared block and unpacks to the same `Batch`."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import torch
import torch.multiprocessing  # registers torch's shared-memory reductions with ForkingPickler

from lead_stream.core.batch import BATCH_TENSOR_FIELDS, Batch, RunCoded
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.loader.packed import ALIGN_BYTES, PackedBatch, pack_batch


def _first_batches(root: Path, num_workers: int, count: int) -> list[Batch]:
    loader = make_loader(
        root, config=LoaderConfig(batch_size=4, num_workers=num_workers, epoch_size=16, seed=5)
    )
    loader.set_epoch(0)
    return [batch for _, batch in zip(range(count), loader)]


def _storages(batch: Batch) -> set[int]:
    tensors = []
    for name in BATCH_TENSOR_FIELDS:
        value = getattr(batch, name)
        tensors += [value.values, value.lengths] if isinstance(value, RunCoded) else [value]
    return {t.untyped_storage().data_ptr() for t in tensors}


def test_pack_then_unpack_keeps_every_field_its_layout_and_the_coding(sharded_root: Path) -> None:
    (batch,) = _first_batches(sharded_root, 0, 1)
    packed = pack_batch(batch)
    assert packed.arena.is_shared() and packed.arena.dtype == torch.uint8 and packed.arena.dim() == 1
    assert all(slot.offset % ALIGN_BYTES == 0 for slot in packed.tensors.values())
    back = packed.unpack()
    assert back.route_id == batch.route_id
    assert isinstance(back.semantic, RunCoded) and back.semantic.shape == batch.semantic.shape
    assert back.rgb.stride() == batch.rgb.stride()  # channels-last camera image stays channels-last
    assert back.depth_u8.stride() == batch.depth_u8.stride()  # transposed depth stays transposed
    assert len(_storages(back)) == 1  # every tensor is a view of the one arena
    dense, back_dense = batch.dense(), back.dense()
    for name in BATCH_TENSOR_FIELDS:
        a, b = getattr(dense, name), getattr(back_dense, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_a_gapped_view_is_stored_contiguous_and_equal() -> None:
    from lead_stream.model.random_batch import random_batch

    batch = random_batch(6, seed=0)
    gapped = torch.arange(6 * 300 * 10, dtype=torch.float32).reshape(6, 300, 10)[:, :, ::2]  # strided, gaps
    batch.radar = gapped
    back = pack_batch(batch, shared=False).unpack()
    assert torch.equal(back.radar, gapped) and back.radar.is_contiguous()


def test_a_packed_batch_pickles_for_a_worker_queue_with_one_shared_storage(sharded_root: Path) -> None:
    (batch,) = _first_batches(sharded_root, 0, 1)
    packed = pack_batch(batch)
    data = ForkingPickler.dumps(packed)  # what a DataLoader worker puts on its result queue
    assert len(data) < 16_384  # layout only: the bytes stay in shared memory
    back = pickle.loads(data)
    assert isinstance(back, PackedBatch)
    assert torch.equal(back.unpack().dense().rgb, batch.dense().rgb)


def test_worker_batches_equal_in_process_batches_and_arrive_packed(sharded_root: Path) -> None:
    in_process = _first_batches(sharded_root, 0, 3)
    from_workers = _first_batches(sharded_root, 2, 3)
    for a, b in zip(in_process, from_workers):
        assert a.route_id == b.route_id
        assert len(_storages(b)) == 1 < len(_storages(a))  # one block crossed per worker batch
        a, b = a.dense(), b.dense()
        for name in BATCH_TENSOR_FIELDS:
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_a_read_of_several_batches_splits_into_the_batches_read_alone_16(sharded_root: Path) -> None:
    def batches(per_read: int) -> list[Batch]:
        config = LoaderConfig(batch_size=4, num_workers=0, epoch_size=28, seed=5, batches_per_read=per_read)
        loader = make_loader(sharded_root, config=config)
        loader.set_epoch(0)
        return list(loader)

    alone, in_reads = batches(1), batches(3)  # 7 batches: reads of 3, 3 and 1
    assert len(alone) == len(in_reads) == 7
    for a, b in zip(alone, in_reads):
        assert a.route_id == b.route_id and b.size == 4
        assert isinstance(b.semantic, RunCoded) and b.semantic.shape[0] == 4
        a, b = a.dense(), b.dense()
        for name in BATCH_TENSOR_FIELDS:
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_a_packed_read_splits_into_its_batches_as_views_of_the_arena_16(sharded_root: Path) -> None:
    from lead_stream.loader.collate import split_batch

    (read,) = _first_batches(sharded_root, 0, 1)  # one batch of 4 rows: here a read of 2 batches of 2
    runs = {}
    for name in ("lidar_bev", "semantic", "bev_semantic"):
        coded = getattr(read, name)
        per_sample = coded.lengths.reshape(-1)
        # offsets of each sample's runs: where the running pixel count reaches a whole raster
        pixels = int(torch.tensor(coded.shape[1:]).prod())
        ends = torch.searchsorted(per_sample.cumsum(0), torch.arange(1, 5) * pixels) + 1
        runs[name] = [0, int(ends[1]), int(ends[3])]
    packed = pack_batch(read)
    unpacked = split_batch(packed.unpack(), 2, runs)
    split = split_batch(read, 2, runs)
    assert len(unpacked) == len(split) == 2
    for a, b in zip(split, unpacked):
        assert a.route_id == b.route_id and b.size == 2
        assert _storages(b) == {packed.arena.untyped_storage().data_ptr()}  # views of the one arena
        a, b = a.dense(), b.dense()
        for name in BATCH_TENSOR_FIELDS:
            assert torch.equal(getattr(a, name), getattr(b, name)), name
