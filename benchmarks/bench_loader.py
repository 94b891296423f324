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
  workers    samples/s the trainer receives over one epoch from N workers, each reading several batches at
             once (`batches_per_read`, default: >= 32 samples a read) into its reused arena pool; the same with
             one batch a read (the pool alone), and with a fresh shared block per batch
             (`reuse_shared_memory=False, batches_per_read=1`: what main did before #16)
  (c) floor  N processes decoding, in parallel, exactly the JPEGs of that epoch, split as the workers split it
             (the same images, as many as the loader serves: the epoch is `passes` x the in-process sample)
and, next to each wall rate, the CPU ms per sample of the whole process tree (trainer + N workers; the floor's
N processes), which other load on a shared machine disturbs less than wall time;
peak RSS of a loader worker (num_workers=2), and the trainer-side cost of taking one batch from a worker
(median time in `next()` while the workers are ahead): one packed block (`lead_stream.packed`, what the
loader sends) vs the same batch as separate tensors (torch's default: one descriptor round trip per tensor).
Prints a table, then ONE JSON line (the last line).

Usage: python benchmarks/bench_loader.py [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import simplejpeg
import torch
from _loader_lead_style import time_lead_style, write_lead_style
from _loader_workers import (
    raw_members,
    time_epoch,
    time_handoff_ms,
    time_parallel_decode,
    worker_jpegs,
    worker_loaders,
    worker_peak_rss_mb,
)
from _report import git_commit

from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.loader.sample_layout import variant_member


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


def time_jpeg_decode(members: list[tuple[dict[str, bytes], bool]], passes: int = 1) -> float:
    jpegs = [m[variant_member("rgb.jpg", pert)] for m, pert in members]
    t0 = time.perf_counter()
    for _ in range(passes):
        for payload in jpegs:
            simplejpeg.decode_jpeg(payload, colorspace="RGB")
    return passes * len(jpegs) / (time.perf_counter() - t0)


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
        per_batch = make_loader(  # one batch a read: every read's fixed costs paid per batch (stop 20)
            root, config=LoaderConfig(batch_size=batch_size, num_workers=0, batches_per_read=1)
        )
        (
            time_loader(loader, 2),  # warm-up: allocates the loader's batch buffers
            time_loader(per_batch, 2),
            time_jpeg_decode(members[:4]),
            time_lead_style(pairs[:4], batch_size),
        )
        loader_rates, decode_rates, lead_rates, host_rates, per_batch_rates = [], [], [], [], []
        for _ in range(rounds):  # interleaved rounds, best of each: robust to other load on a shared machine
            host_rates.append(time_loader(loader, num_batches, expand_on_host=True, passes=passes)[0])
            per_batch_rates.append(time_loader(per_batch, num_batches, passes=passes)[0])
            rate, count = time_loader(loader, num_batches, passes=passes)
            loader_rates.append(rate)
            decode_rates.append(time_jpeg_decode(members, passes))
            lead_rates.append(time_lead_style(pairs, batch_size))
        loader_rate, decode_rate, lead_rate = max(loader_rates), max(decode_rates), max(lead_rates)
        host_rate, per_batch_rate = max(host_rates), max(per_batch_rates)
        worker_rows = {}
        worker_epoch *= passes  # as many samples as the floor decodes images (it decodes each once)
        for num_workers in [2] + ([4] if (os.cpu_count() or 1) >= 4 else []):
            loaders = worker_loaders(root, batch_size, worker_epoch, num_workers)
            shares = worker_jpegs(loaders["reused"], num_workers)
            for one in loaders.values():
                time_epoch(one)  # warm-up: starts the workers, fills their pools
            rates: dict[str, list[tuple[float, float]]] = {"floor": [], **{name: [] for name in loaders}}
            for _ in range(rounds):  # interleaved, best of each
                rates["floor"].append(time_parallel_decode(shares))
                for name, one in loaders.items():
                    rates[name].append(time_epoch(one))
            best = {name: max(rate for rate, _ in values) for name, values in rates.items()}
            best.update({f"{name}_cpu": min(cpu for _, cpu in values) for name, values in rates.items()})
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
            "  same, one batch a read",
            f"{per_batch_rate:8.1f} samples/s/core",
            f"batches_per_read=1 (stop 20); {per_batch_rate / decode_rate:.3f} of (a)",
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
                    "  same, one batch a read",
                    f"{best['per_batch'] / n:8.1f} samples/s/core",
                    f"batches_per_read=1 (stop 20); {best['per_batch'] / best['floor']:.3f} of (c)",
                ),
                (
                    "  same, a fresh shared block per batch",
                    f"{best['fresh'] / n:8.1f} samples/s/core",
                    f"reuse_shared_memory=False, batches_per_read=1 (before #16); "
                    f"{best['fresh'] / best['floor']:.3f} of (c)",
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
                (
                    "  CPU per sample, loader tree / (c)",
                    f"{best['floor_cpu'] / best['reused_cpu']:8.3f}",
                    f"{best['reused_cpu']:.2f} ms/sample (trainer + {n} workers; fresh blocks "
                    f"{best['fresh_cpu']:.2f}) vs {best['floor_cpu']:.2f} ms/image",
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
                "one_batch_a_read_ratio_vs_decode": round(per_batch_rate / decode_rate, 4),
                "lead_style_samples_per_s": round(lead_rate, 2),
                "speedup_vs_lead_style": round(loader_rate / lead_rate, 3),
                "peak_rss_mb_per_worker": round(rss, 1),
                "cold_start_samples_per_s_per_core": round(cold_rate, 2),
                "host_expanded_samples_per_s_per_core": round(host_rate, 2),
                "workers": {
                    str(n): {
                        "samples_per_s_per_core": round(best["reused"] / n, 2),
                        "fresh_block_samples_per_s_per_core": round(best["fresh"] / n, 2),
                        "one_batch_a_read_ratio_vs_floor": round(best["per_batch"] / best["floor"], 4),
                        "jpeg_floor_per_s_per_core": round(best["floor"] / n, 2),
                        "ratio_vs_floor": round(best["reused"] / best["floor"], 4),
                        "fresh_block_ratio_vs_floor": round(best["fresh"] / best["floor"], 4),
                        "shm_allocs_per_worker": best["allocs"],
                        "cpu_ms_per_sample": round(best["reused_cpu"], 3),
                        "fresh_block_cpu_ms_per_sample": round(best["fresh_cpu"], 3),
                        "floor_cpu_ms_per_image": round(best["floor_cpu"], 3),
                        "cpu_ratio_vs_floor": round(best["floor_cpu"] / best["reused_cpu"], 4),
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
