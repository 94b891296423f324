"""bench_loader's worker rows: N persistent workers vs N processes decoding the same JPEGs (the N-core floor),
wall rate and CPU seconds of each side's whole process tree; the trainer's cost to take one worker batch."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import time
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from torch.utils.data import DataLoader, IterableDataset

from lead_stream.core.batch import Batch, RunCoded
from lead_stream.loader import LoaderConfig, build_epoch, make_loader
from lead_stream.loader.packed import pack_batch
from lead_stream.loader.sample_layout import variant_member
from lead_stream.loader.tar_reader import ShardFiles, split_members

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def raw_members(loader, samples: list[tuple[int, bool]]) -> list[tuple[dict[str, bytes], bool]]:
    """The stored members of each (manifest row, perturbated) sample, copied out of the shards."""
    cat = loader.catalog
    files = ShardFiles(loader._stream.locations)
    out = []
    for row, pert in samples:
        blob = files.read(int(cat.sample_shard[row]), int(cat.sample_offset[row]), int(cat.sample_size[row]))
        members = split_members(blob, shard="bench", key=cat.key(row))
        out.append(({name: bytes(payload) for name, payload in members.items()}, pert))
    files.close()
    return out


def worker_loaders(root: Path, batch_size: int, epoch_size: int, num_workers: int) -> dict[str, object]:
    """Persistent-worker loaders of one long epoch: the default (pooled arenas, reads of several batches),
    pooled arenas with one batch a read (stop 20), and a fresh block per batch (before #16)."""
    variants = {
        "reused": {},
        "per_batch": {"batches_per_read": 1},
        "fresh": {"reuse_shared_memory": False, "batches_per_read": 1},
    }
    return {
        name: make_loader(
            root,
            config=LoaderConfig(
                batch_size=batch_size,
                num_workers=num_workers,
                persistent_workers=True,
                epoch_size=epoch_size,
                **overrides,
            ),
        )
        for name, overrides in variants.items()
    }


def _tree_cpu_s() -> float:
    """CPU seconds (user + sys) of this process and its live children (the loaders' workers) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    for child in multiprocessing.active_children():
        try:
            with open(f"/proc/{child.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * _TICK_S
    return total


def time_epoch(loader) -> tuple[float, float]:
    """(samples/s the trainer receives, CPU ms per sample of the whole process tree) over one epoch of a warm
    loader (workers already started). Idle workers of other loaders in the tree cost ~0 CPU."""
    loader.set_epoch(0)
    cpu0, t0 = _tree_cpu_s(), time.perf_counter()
    count = sum(batch.size for batch in loader)
    wall, cpu = time.perf_counter() - t0, _tree_cpu_s() - cpu0
    return count / wall, 1e3 * cpu / count


def worker_jpegs(loader, num_workers: int) -> list[list[bytes]]:
    """The served camera JPEGs of the loader's epoch 0, split as its workers split batches (g mod N)."""
    epoch = build_epoch(loader.catalog, loader.config, epoch=0, mixture=None)
    samples = [(int(epoch.slot_rows[s]), bool(epoch.perturbated[s])) for s in range(len(epoch.slot_rows))]
    members = raw_members(loader, samples)
    batch = loader.config.batch_size
    return [
        [
            m[variant_member("rgb.jpg", pert)]
            for g in range(w, epoch.num_batches, num_workers)
            for m, pert in members[g * batch : (g + 1) * batch]
        ]
        for w in range(num_workers)
    ]


def _decode_share(jpegs: list[bytes], barrier, results, cpu, idx: int) -> None:
    for payload in jpegs[:8]:  # warm-up (allocator, code pages), as the warm loader it is compared with
        simplejpeg.decode_jpeg(payload, colorspace="RGB")
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for payload in jpegs:
        simplejpeg.decode_jpeg(payload, colorspace="RGB")
    results[idx], cpu[idx] = time.perf_counter() - t0, time.process_time() - c0


def time_parallel_decode(shares: list[list[bytes]]) -> tuple[float, float]:
    """(images/s of N processes decoding their shares at once, wall time of the slowest: the N-core floor;
    CPU ms per image of those processes)."""
    ctx = multiprocessing.get_context("fork")
    barrier, results, cpu = ctx.Barrier(len(shares)), ctx.Array("d", len(shares)), ctx.Array("d", len(shares))
    procs = [
        ctx.Process(target=_decode_share, args=(jpegs, barrier, results, cpu, i))
        for i, jpegs in enumerate(shares)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    images = sum(len(jpegs) for jpegs in shares)
    return images / max(results[:]), 1e3 * sum(cpu[:]) / images


def worker_peak_rss_mb(root: Path, batch_size: int, num_batches: int) -> tuple[float, float]:
    loader = make_loader(
        root, config=LoaderConfig(batch_size=batch_size, num_workers=2, persistent_workers=False)
    )
    for _, _batch in zip(range(num_batches), loader):
        pass
    tele = loader.telemetry()
    return float(tele["peak_rss_mb_per_worker"]), float(tele["rss_growth_mb_per_worker"])


def _separate(batch: Batch) -> Batch:
    """A copy with every tensor in its own storage, as a collate makes them."""

    def copy(value):
        if isinstance(value, RunCoded):
            return RunCoded(value.values.clone(), value.lengths.clone(), value.shape)
        return value.clone() if isinstance(value, torch.Tensor) else list(value)

    return Batch(**{f.name: copy(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


class _Handoff(IterableDataset):
    """Yields `count` fresh copies of one batch from a worker: packed (one block) or tensor by tensor."""

    def __init__(self, batch: Batch, count: int, packed: bool) -> None:
        self.batch, self.count, self.packed = batch, count, packed

    def __iter__(self):
        for _ in range(self.count):
            yield pack_batch(self.batch) if self.packed else _separate(self.batch)


def time_handoff_ms(batch: Batch, *, packed: bool, count: int = 14, consumer_s: float = 0.1) -> float:
    """Median ms the trainer spends taking a worker batch (`next()`, plus `unpack()` when packed) while
    2 workers are ahead of it."""
    batches = iter(
        DataLoader(_Handoff(batch, count, packed), batch_size=None, num_workers=2, prefetch_factor=2)
    )
    waits = []
    for _ in range(count):
        t0 = time.perf_counter()
        item = next(batches)
        if packed:
            item = item.unpack()
        waits.append(time.perf_counter() - t0)
        time.sleep(consumer_s)  # a training step: the workers refill the queue meanwhile
    return float(np.median(waits[2:])) * 1e3
