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
