"""Loader samples/s per core vs bare JPEG decode and vs a LEAD-style per-frame loader, one synthetic cache.

Builds its own data (write_synthetic_lead → build_index → write_shards) in a temp dir, then measures in
one process, one thread (`torch.set_num_threads(1)`), so every rate is per core:
  loader     lead-stream `make_loader(num_workers=0)`, warm (steady state): mapped shard view, chosen variant's JPEG
             + array group, collate → Batch (rasters run-length coded: a GPU trainer expands them on the device;
             a second row adds the host-side expansion `batch.dense()` of a CPU trainer)
  (a) decode simplejpeg.decode_jpeg of the same served camera images, already in memory
  (b) lead   LEAD-style: one xz-pickle file per (frame, variant) holding the JPEG + PNG-encoded arrays
             (LEAD §3.2), open + unpickle + PNG/JPEG decode + default_collate
then with worker processes (num_workers = 2, and 4 where the machine has >= 4 cores; persistent, warm):
  workers    samples/s the trainer receives from N workers, each packing into its reused arena pool, and the
             same with a fresh shared block per batch (`reuse_shared_memory=False`: the hand-over before #16)
  (c) floor  N processes decoding the JPEGs of the batches their worker would serve, in parallel
and peak RSS of a loader worker (num_workers=2), and the trainer-side cost of taking one batch from a worker
(median time in `next()` while the workers are ahead): one packed block (`lead_stream.packed`, what the
loader sends) vs the same batch as separate tensors (torch's default: one descriptor round trip per tensor).
Prints a table, then ONE JSON line (the last line).

Usage: python benchmarks/bench_loader.py [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import lzma
import multiprocessing
import os
import pickle
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from _report import git_commit
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, default_collate

from lead_stream.cache import features
from lead_stream.core.batch import Batch, RunCoded
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.loader.packed import pack_batch
from lead_stream.loader.sample_layout import variant_member
from lead_stream.loader.tar_reader import ShardFiles, split_members


def build_cache(root: Path, *, num_routes: int, num_frames: int) -> None:
    from lead_stream.cache.shard import ShardConfig, write_shards
    from lead_stream.index import IndexConfig, build_index
    from lead_stream.synthetic import write_synthetic_lead

    write_synthetic_lead(
        root, num_routes=num_routes, num_frames=num_frames, seed=0, num_rejected=0, workers=1
    )
    build_index(root, config=IndexConfig(workers=1, progress=False))
    write_shards(root, config=ShardConfig(workers=1, progress=False, max_samples_per_shard=64))


def served_samples(loader, num_batches: int) -> list[tuple[int, bool]]:
    """(manifest row, perturbated) of the first `num_batches` batches the loader serves (epoch 0)."""
    from lead_stream.loader import build_epoch

    epoch = build_epoch(loader.catalog, loader.config, epoch=0, mixture=None)
    n = min(num_batches, epoch.num_batches) * loader.config.batch_size
    return [(int(epoch.slot_rows[s]), bool(epoch.perturbated[s])) for s in range(n)]


def time_loader(
    loader, num_batches: int, *, expand_on_host: bool = False, passes: int = 1
) -> tuple[float, int]:
    """Samples/s of epoch 0's first `num_batches` batches, re-served by a loader that already ran (steady state:
    its batch buffers are allocated and warm, as in a training run after its first batches).

    The loader's batches carry LiDAR/semantic/BEV rasters run-length coded; a GPU trainer expands them on the
    device in `batch.to(device)`. `expand_on_host` adds `batch.dense()` (the CPU-training path) to the timing.
    """
    batches = min(num_batches, len(loader))
    t0 = time.perf_counter()
    count = 0
    for _ in range(passes):  # the same batches again: a longer, steadier measurement
        loader.set_epoch(0)
        for _, batch in zip(range(batches), loader):
            if expand_on_host:
                batch = batch.dense()
            count += batch.size
    return count / (time.perf_counter() - t0), count // passes


def time_cold_loader(root: Path, batch_size: int, num_batches: int) -> float:
    """Samples/s of a NEW loader's first `num_batches` batches (buffer allocation and first touches included)."""
    loader = make_loader(root, config=LoaderConfig(batch_size=batch_size, num_workers=0))
    batches = min(num_batches, len(loader))
    t0 = time.perf_counter()
    count = sum(batch.size for _, batch in zip(range(batches), loader))
    return count / (time.perf_counter() - t0)


def raw_members(loader, samples: list[tuple[int, bool]]) -> list[tuple[dict[str, bytes], bool]]:
    cat = loader.catalog
    files = ShardFiles(loader._stream.locations)
    out = []
    for row, pert in samples:
        blob = files.read(int(cat.sample_shard[row]), int(cat.sample_offset[row]), int(cat.sample_size[row]))
        members = split_members(blob, shard="bench", key=cat.key(row))
        out.append(({name: bytes(payload) for name, payload in members.items()}, pert))
    files.close()
    return out


def time_jpeg_decode(members: list[tuple[dict[str, bytes], bool]], passes: int = 1) -> float:
    jpegs = [m[variant_member("rgb.jpg", pert)] for m, pert in members]
    t0 = time.perf_counter()
    for _ in range(passes):
        for payload in jpegs:
            simplejpeg.decode_jpeg(payload, colorspace="RGB")
    return passes * len(jpegs) / (time.perf_counter() - t0)


def worker_loaders(root: Path, batch_size: int, epoch_size: int, num_workers: int) -> dict[str, object]:
    """Persistent-worker loaders of one long epoch: pooled arenas ("reused") and a fresh block per batch."""
    return {
        name: make_loader(
            root,
            config=LoaderConfig(
                batch_size=batch_size,
                num_workers=num_workers,
                persistent_workers=True,
                epoch_size=epoch_size,
                reuse_shared_memory=reuse,
            ),
        )
        for name, reuse in (("reused", True), ("fresh", False))
    }


def time_epoch(loader) -> float:
    """Samples/s the trainer receives over one whole epoch of a warm loader (workers already started)."""
    loader.set_epoch(0)
    t0 = time.perf_counter()
    count = sum(batch.size for batch in loader)
    return count / (time.perf_counter() - t0)


def worker_jpegs(loader, num_workers: int) -> list[list[bytes]]:
    """The served camera JPEGs of the loader's epoch 0, split as its workers split batches (g mod N)."""
    from lead_stream.loader import build_epoch

    epoch = build_epoch(loader.catalog, loader.config, epoch=0, mixture=None)
    samples = [(int(epoch.slot_rows[s]), bool(epoch.perturbated[s])) for s in range(len(epoch.slot_rows))]
    members = raw_members(loader, samples)
    batch = loader.config.batch_size
    return [
        [
            variant_member_payload(m, pert)
            for g in range(w, epoch.num_batches, num_workers)
            for m, pert in members[g * batch : (g + 1) * batch]
        ]
        for w in range(num_workers)
    ]


def variant_member_payload(members: dict[str, bytes], perturbated: bool) -> bytes:
    return members[variant_member("rgb.jpg", perturbated)]


def _decode_share(jpegs: list[bytes], passes: int, barrier, results, idx: int) -> None:
    for payload in jpegs[:8]:  # warm-up (allocator, code pages), as the warm loader it is compared with
        simplejpeg.decode_jpeg(payload, colorspace="RGB")
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(passes):
        for payload in jpegs:
            simplejpeg.decode_jpeg(payload, colorspace="RGB")
    results[idx] = time.perf_counter() - t0


def time_parallel_decode(shares: list[list[bytes]], passes: int) -> float:
    """Images/s of N processes decoding their shares at once (wall time of the slowest): the N-core floor."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(len(shares)), ctx.Array("d", len(shares))
    procs = [
        ctx.Process(target=_decode_share, args=(jpegs, passes, barrier, results, i))
        for i, jpegs in enumerate(shares)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return passes * sum(len(jpegs) for jpegs in shares) / max(results[:])


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _savez(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, array)
    return buffer.getvalue()


def write_lead_style(
    root: Path,
    loader,
    samples: list[tuple[int, bool]],
    members: list[tuple[dict[str, bytes], bool]],
    out_dir: Path,
) -> list[tuple[Path, Path]]:
    """LEAD's persistent cache (§3.2): one lzma pickle per served (frame, variant), plus the raw meta path.

    Same content as the shards: JPEG bytes as stored, LiDAR as 16-bit PNG, semantic/depth PNG, the
    256x256 HD map PNG and 1024x1024 occupancy PNG (our BEV raster placed where LEAD crops it), raw
    (90, 9) boxes, 4 savez_compressed radar blobs and the radar detections.
    """
    from lead_stream.core.layout import modality_path, route_path

    out_dir.mkdir(parents=True, exist_ok=True)
    cat = loader.catalog
    pairs = []
    for i, ((m, pert), (row, _)) in enumerate(zip(members, samples)):
        arrays = {
            k: np.ascontiguousarray(a)
            for k, a in features.decode_sample_arrays(m["arrays.lz4"])[
                "perturbated" if pert else "normal"
            ].items()
        }
        lidar16 = (arrays["lidar_bev"].astype(np.float32) / 5 * 65535).astype(np.uint16)
        bev = arrays["bev_semantic"]
        hdmap = np.zeros((256, 256), np.uint8)
        hdmap[48:208, 64:256] = np.minimum(bev[::2, ::2], 3)
        occupancy = np.zeros((1024, 1024), np.uint8)
        occupancy[352:672, 384:768] = np.where(bev > 3, bev - 3, 0)
        boxes = np.zeros((90, 9), np.float32)
        raw_boxes = arrays["boxes"]
        boxes[: len(raw_boxes)] = raw_boxes
        radar = arrays["radar"]
        record = {
            "image": m[variant_member("rgb.jpg", pert)],
            "lidar_bev": _png(lidar16),
            "semantic": _png(arrays["semantic"]),
            "depth": _png(arrays["depth"]),
            "bev_semantic": _png(hdmap),
            "bev_occupancy": _png(occupancy),
            "bboxes": boxes,
            "radars": tuple(_savez(radar[radar[:, 4] == s, :4].astype(np.float16)) for s in range(4)),
            "radar_detections": arrays["radar_detections"],
        }
        path = out_dir / f"{i:06d}.pkl"
        with lzma.open(path, "wb") as handle:
            pickle.dump(record, handle)
        route_id = cat.route_id(cat.sample_route[row])
        pairs.append((path, modality_path(route_path(root, route_id), "metas", int(cat.sample_frame[row]))))
    return pairs


def _lead_style_sample(paths: tuple[Path, Path]) -> dict:
    """LEAD's cache-hit path: meta lzma pickle + cache lzma pickle, PNG/JPEG/npz decode, BEV crop + merge."""
    cache_path, meta_path = paths
    with lzma.open(meta_path, "rb") as handle:
        meta = pickle.load(handle)
    with lzma.open(cache_path, "rb") as handle:
        record = pickle.load(handle)
    png = lambda payload: np.asarray(Image.open(io.BytesIO(payload)))
    hdmap = png(record["bev_semantic"])[48:208, 64:256].repeat(2, 0).repeat(2, 1)
    occupancy = png(record["bev_occupancy"])[352:672, 384:768]
    radar = np.zeros((300, 5), np.float32)
    for sensor, blob in enumerate(record["radars"]):
        points = np.load(io.BytesIO(blob))["arr_0"][:75]
        radar[75 * sensor : 75 * sensor + len(points), :4] = points
        radar[75 * sensor : 75 * sensor + len(points), 4] = sensor
    return {
        "rgb": simplejpeg.decode_jpeg(record["image"], colorspace="RGB").transpose(2, 0, 1),
        "rasterized_lidar": (png(record["lidar_bev"]).astype(np.float32) / 65535)[None],
        "semantic": png(record["semantic"]),
        "depth": png(record["depth"]).astype(np.float32) / 255 * 50,
        "bev_semantic": np.where(occupancy == 0, hdmap, occupancy + 3),
        "center_net_bounding_boxes": record["bboxes"],
        "radar": radar,
        "radar_detections": record["radar_detections"],
        "speed": float(meta.get("speed", 0.0)),
    }


def time_lead_style(pairs: list[tuple[Path, Path]], batch_size: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(pairs), batch_size):
        default_collate([_lead_style_sample(p) for p in pairs[start : start + batch_size]])
    return len(pairs) / (time.perf_counter() - t0)


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


def machine() -> str:
    cpu = platform.processor() or platform.node()
    return (
        f"{platform.machine()} {cpu} {os.cpu_count()} cpus, python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cache, < 1 min on 2 cores")
    parser.add_argument("--keep", type=Path, default=None, help="build the cache here and keep it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    num_routes, num_frames, num_batches, batch_size, rounds, passes, worker_epoch = (
        (3, 24, 8, 8, 5, 3, 192) if args.quick else (4, 60, 24, 8, 5, 1, 768)
    )
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = (args.keep or Path(tmp)) / "carla_leaderboard2"
        t_build = time.perf_counter()
        if not (root / "cache").exists():
            build_cache(root, num_routes=num_routes, num_frames=num_frames)
        t_build = time.perf_counter() - t_build
        probe = make_loader(root, config=LoaderConfig(batch_size=batch_size, num_workers=0))
        samples = served_samples(probe, num_batches)
        members = raw_members(probe, samples)
        pairs = write_lead_style(root, probe, samples, members, Path(tmp) / "lead_style")
        cold_rate = time_cold_loader(root, batch_size, num_batches)
        loader = make_loader(root, config=LoaderConfig(batch_size=batch_size, num_workers=0))
        (
            time_loader(loader, 2),  # warm-up: allocates the loader's batch buffers
            time_jpeg_decode(members[:4]),
            time_lead_style(pairs[:4], batch_size),
        )
        loader_rates, decode_rates, lead_rates, host_rates = [], [], [], []
        for _ in range(rounds):  # interleaved rounds, best of each: robust to other load on a shared machine
            host_rates.append(time_loader(loader, num_batches, expand_on_host=True, passes=passes)[0])
            rate, count = time_loader(loader, num_batches, passes=passes)
            loader_rates.append(rate)
            decode_rates.append(time_jpeg_decode(members, passes))
            lead_rates.append(time_lead_style(pairs, batch_size))
        loader_rate, decode_rate, lead_rate = max(loader_rates), max(decode_rates), max(lead_rates)
        host_rate = max(host_rates)
        worker_rows = {}
        for num_workers in [2] + ([4] if (os.cpu_count() or 1) >= 4 else []):
            loaders = worker_loaders(root, batch_size, worker_epoch, num_workers)
            shares = worker_jpegs(loaders["reused"], num_workers)
            for one in loaders.values():
                time_epoch(one)  # warm-up: starts the workers, fills their pools
            rates: dict[str, list[float]] = {"floor": [], "reused": [], "fresh": []}
            for _ in range(rounds):  # interleaved, best of each
                rates["floor"].append(time_parallel_decode(shares, passes))
                rates["reused"].append(time_epoch(loaders["reused"]))
                rates["fresh"].append(time_epoch(loaders["fresh"]))
            best = {name: max(values) for name, values in rates.items()}
            best["allocs"] = loaders["reused"].telemetry()["shm_allocs_per_worker"]
            best["fallbacks"] = loaders["reused"].telemetry()["shm_fallbacks_per_worker"]
            worker_rows[num_workers] = best
            del loaders
        rss, rss_growth = worker_peak_rss_mb(root, batch_size, 2 * num_batches)
        loader.set_epoch(0)
        handoff_batch = next(iter(loader))
        handoff_packed = time_handoff_ms(handoff_batch, packed=True)
        handoff_tensors = time_handoff_ms(handoff_batch, packed=False)
    rows = [
        (
            "lead-stream loader (decode + collate)",
            f"{loader_rate:8.1f} samples/s/core",
            f"{count} samples x {passes}, best of {rounds} interleaved, warm loader",
        ),
        (
            "  same, rasters also expanded on the host",
            f"{host_rate:8.1f} samples/s/core",
            f"batch.dense() (CPU training); {host_rate / decode_rate:.3f} of (a)",
        ),
        (
            "  same, a new loader's first batches",
            f"{cold_rate:8.1f} samples/s/core",
            "includes allocating and first-touching its batch buffers",
        ),
        (
            "(a) bare simplejpeg decode, same images",
            f"{decode_rate:8.1f} images/s/core",
            f"{len(members)} images",
        ),
        (
            "(b) LEAD-style per-frame xz-pickle loader",
            f"{lead_rate:8.1f} samples/s/core",
            f"{len(members)} frames, cache + meta pickle",
        ),
        ("loader / (a)", f"{loader_rate / decode_rate:8.3f}", "target >= 0.85"),
        ("loader / (b)", f"{loader_rate / lead_rate:8.2f}x", "target >= 5"),
        *[
            row
            for n, best in worker_rows.items()
            for row in (
                (
                    f"loader, {n} workers (reused arenas)",
                    f"{best['reused'] / n:8.1f} samples/s/core",
                    f"{best['reused']:.1f} samples/s received; {worker_epoch} samples/epoch, best of {rounds}",
                ),
                (
                    "  same, a fresh shared block per batch",
                    f"{best['fresh'] / n:8.1f} samples/s/core",
                    f"reuse_shared_memory=False (before #16); {best['fresh'] / best['floor']:.3f} of (c)",
                ),
                (
                    f"(c) {n} processes decoding their JPEGs",
                    f"{best['floor'] / n:8.1f} images/s/core",
                    f"{best['floor']:.1f} images/s in all, same run",
                ),
                (
                    f"loader {n} workers / (c)",
                    f"{best['reused'] / best['floor']:8.3f}",
                    f"target >= 0.75; pool: {best['allocs']} shared allocations/worker, "
                    f"{best['fallbacks']} fallbacks",
                ),
            )
        ],
        ("peak RSS per worker", f"{rss:8.1f} MB", "num_workers=2, ru_maxrss incl. pages shared with parent"),
        ("  of which grown while loading", f"{rss_growth:8.1f} MB", "peak minus RSS at the worker's start"),
        (
            "trainer's cost to take a worker batch",
            f"{handoff_packed:8.2f} ms",
            (
                f"one packed block; {handoff_tensors:.2f} ms tensor by tensor (torch default), "
                f"{handoff_tensors / max(handoff_packed, 1e-9):.1f}x"
            ),
        ),
        ("cache build (not timed above)", f"{t_build:8.1f} s", f"{num_routes} routes x {num_frames} frames"),
    ]
    for name, value, note in rows:
        print(f"{name:42s} {value:>24s}   {note}")
    print(
        json.dumps(
            {
                "samples_per_s_per_core": round(loader_rate, 2),
                "jpeg_decode_per_s_per_core": round(decode_rate, 2),
                "ratio_vs_decode": round(loader_rate / decode_rate, 4),
                "lead_style_samples_per_s": round(lead_rate, 2),
                "speedup_vs_lead_style": round(loader_rate / lead_rate, 3),
                "peak_rss_mb_per_worker": round(rss, 1),
                "cold_start_samples_per_s_per_core": round(cold_rate, 2),
                "host_expanded_samples_per_s_per_core": round(host_rate, 2),
                "workers": {
                    str(n): {
                        "samples_per_s_per_core": round(best["reused"] / n, 2),
                        "fresh_block_samples_per_s_per_core": round(best["fresh"] / n, 2),
                        "jpeg_floor_per_s_per_core": round(best["floor"] / n, 2),
                        "ratio_vs_floor": round(best["reused"] / best["floor"], 4),
                        "fresh_block_ratio_vs_floor": round(best["fresh"] / best["floor"], 4),
                        "shm_allocs_per_worker": best["allocs"],
                    }
                    for n, best in worker_rows.items()
                },
                "handoff_ms_per_batch": round(handoff_packed, 3),
                "handoff_ms_per_batch_tensor_by_tensor": round(handoff_tensors, 3),
                "machine": machine(),
                "git_commit": git_commit(),
            }
        )
    )


if __name__ == "__main__":
    main()
