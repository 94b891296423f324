"""Ingest of LEAD's released zips: unzip + index + shard of the extracted tree vs index + shard of the zips.

Generates its own synthetic routes (full: 6 usable routes x 60 frames; --quick: 2 x 20), zips them into
LEAD's released layout (`zip/<Scenario>/<route>.zip`, members under `data/carla_leaderboard2/data/`, deflate
like `zip -r`), then, in rounds that alternate which of the two paths runs first:
  baseline   LEAD's workflow: `unzip -o ZIP -d .` of every zip (as scripts/unzip_routes.sh, one process per
             core), then `build_index` + `write_shards` on the extracted tree
  candidate  `build_index` + `write_shards` straight from the zips (members read in place)
Every figure is the best of the rounds (the machine may be shared). Both caches are compared byte for byte.
Targets: from zips >= 1.0x the extracted tree's index + shard alone, >= 2x including the extraction.
Prints a table, then as the very last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _report import cores, git_commit, machine, print_rows

from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.index import IndexConfig, build_index
from lead_stream.sources import discover_routes
from lead_stream.synthetic import write_synthetic_lead, zip_routes

MEMBER_DATA_ROOT = Path("data/carla_leaderboard2")  # where `unzip -d .` puts the routes (LEAD's layout)


def _unzip_one(zip_file: Path, target: Path) -> None:
    if shutil.which("unzip"):
        subprocess.run(["unzip", "-o", "-q", str(zip_file), "-d", str(target)], check=True)
    else:  # the same extraction without Info-ZIP
        with zipfile.ZipFile(zip_file) as archive:
            archive.extractall(target)


def _extract(zips: list[Path], target: Path, workers: int) -> float:
    """Seconds to extract every zip into `target` (LEAD: `unzip -o ZIP -d .`, in parallel)."""
    target.mkdir(parents=True)
    for scenario in {z.parent.name for z in zips}:  # parallel unzips race to create the shared folders
        (target / MEMBER_DATA_ROOT / "data" / scenario).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each thread waits on one unzip process
        list(pool.map(lambda z: _unzip_one(z, target), zips))
    os.sync()  # the extracted files are on disk, as a user's would be before training
    return time.perf_counter() - started


def _index_and_shard(root: Path, workers: int) -> tuple[float, float, Path]:
    """(index seconds, shard seconds, cache dir) of a fresh index and cache of `root`."""
    shutil.rmtree(root / "index", ignore_errors=True)
    shutil.rmtree(root / "cache", ignore_errors=True)
    index = build_index(root, config=IndexConfig(workers=workers, progress=False))
    shards = write_shards(root, config=ShardConfig(workers=workers, progress=False))
    return index.seconds, shards.seconds, shards.cache_dir


def _same_shards(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("shard-*.tar"))
    return (
        bool(names)
        and names == sorted(p.name for p in b.glob("shard-*.tar"))
        and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small set (whole run < 1 min on 2 cores)")
    parser.add_argument("--routes", type=int, help="usable routes (default 6, quick 2)")
    parser.add_argument("--frames", type=int, help="frames per route (default 60, quick 20)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 4, quick 3)")
    args = parser.parse_args()
    num_routes = args.routes or (2 if args.quick else 6)
    num_frames = args.frames or (20 if args.quick else 60)
    rounds = args.rounds or (3 if args.quick else 4)
    workers = args.workers or cores()

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        released = Path(tmp) / "released" / "carla_leaderboard2"
        started = time.perf_counter()
        write_synthetic_lead(
            released, num_routes=num_routes, num_frames=num_frames, seed=0, num_rejected=0, workers=cores()
        )
        zips = zip_routes(released, discover_routes(released))  # the zips only, as after a download
        synth_s = time.perf_counter() - started
        zip_bytes = sum(z.stat().st_size for z in zips)
        for z in zips:  # warm the page cache for both paths alike
            z.read_bytes()

        extract, base_index, base_shard, zip_index, zip_shard = [], [], [], [], []
        identical = True
        for round_idx in range(rounds):
            repo = Path(tmp) / f"extracted{round_idx}"
            zips_first = (
                round_idx % 2 == 1
            )  # alternate which path runs first (load drifts on a shared machine)
            if zips_first:
                i_s, s_s, zip_cache = _index_and_shard(released, workers)
                zip_index.append(i_s)
                zip_shard.append(s_s)
            extract.append(_extract(zips, repo, workers))
            i_s, s_s, base_cache = _index_and_shard(repo / MEMBER_DATA_ROOT, workers)
            base_index.append(i_s)
            base_shard.append(s_s)
            if not zips_first:
                i_s, s_s, zip_cache = _index_and_shard(released, workers)
                zip_index.append(i_s)
                zip_shard.append(s_s)
            identical &= _same_shards(base_cache, zip_cache)
            shutil.rmtree(repo)
        num_files = sum(len(zipfile.ZipFile(z).namelist()) for z in zips)

    best = {
        name: min(v)
        for name, v in (
            ("extract", extract),
            ("base_index", base_index),
            ("base_shard", base_shard),
            ("zip_index", zip_index),
            ("zip_shard", zip_shard),
        )
    }
    baseline = best["base_index"] + best["base_shard"]
    candidate = best["zip_index"] + best["zip_shard"]
    ratio = baseline / candidate
    ratio_with_extract = (best["extract"] + baseline) / candidate
    rows = [
        (
            "synthetic set",
            f"{num_routes} routes x {num_frames} frames, {len(zips)} zips, {zip_bytes / 1e6:.1f} MB, "
            f"{num_files:,} members, written in {synth_s:.1f}s",
        ),
        (f"unzip ({workers} parallel)", f"{best['extract']:.2f}s"),
        (
            "extracted: index + shard",
            f"{best['base_index']:.2f}s + {best['base_shard']:.2f}s = {baseline:.2f}s",
        ),
        (
            "zips:      index + shard",
            f"{best['zip_index']:.2f}s + {best['zip_shard']:.2f}s = {candidate:.2f}s",
        ),
        ("ratio vs index + shard", f"{ratio:.2f}x  (target >= 1.0)"),
        ("ratio incl. unzip", f"{ratio_with_extract:.2f}x  (target >= 2.0)"),
        ("caches byte-identical", str(identical)),
    ]
    print_rows(rows)
    print(
        json.dumps(
            {
                "baseline": {
                    "unzip_s": round(best["extract"], 3),
                    "index_s": round(best["base_index"], 3),
                    "shard_s": round(best["base_shard"], 3),
                },
                "candidate": {"index_s": round(best["zip_index"], 3), "shard_s": round(best["zip_shard"], 3)},
                "ratio_vs_index_shard": round(ratio, 3),
                "ratio_incl_unzip": round(ratio_with_extract, 3),
                "caches_identical": identical,
                "routes": num_routes,
                "frames_per_route": num_frames,
                "zip_mb": round(zip_bytes / 1e6, 2),
                "rounds": rounds,
                "workers": workers,
                "machine": machine(),
                "git_commit": git_commit(),
            }
        )
    )


if __name__ == "__main__":
    main()
