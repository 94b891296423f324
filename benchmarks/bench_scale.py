"""Index, shard and loader costs at real dataset sizes, grown from a few generated routes.

Generates 2 synthetic routes (quick: 40 frames each, else 100), indexes and shards them, then grows a data
root to each size (--quick: 100 k frames; default: 1 M and 3 M): the grown routes are real folders whose
metas/, bboxes/ and results.json are hard links to a seed route's files (sensor folders symlinked), their
frames/routes tables and bucket tables are the seed's rows under the new route ids (written through the
index's own part writer, with each route's real stat stamp and fingerprint), and their cache manifest
points at hard links of the seed's shards (same bytes, so the loader really reads and decodes them).
Each step then runs in a fresh process (time and peak RSS of that process):

  index no-op            build_index on the unchanged tree (nothing read)
  shard no-op            write_shards on the unchanged cache
  shard replan           write_shards after the index tables were rewritten with the same content (their
                         stamps touched): it plans from the bucket tables, finds nothing to build
  bucket rebuild         every collection re-derived from a lazy scan of the frame parts
  make_loader cold/warm  make_loader (catalog built / mapped) to the first batch, 2 workers
  epoch start            2 persistent workers, set_epoch(e) to the first batch of epochs 1..3; the
                         rank's and every worker's private RSS (Private_Clean + Private_Dirty) per epoch
  index add-one-route    one generated route added (hard links of a seed route), build_index
  shard add-one-route    write_shards after it (the new route's samples really built)
  index full             (only with --steps ... index_full) build_index --force: every route read again;
                         peak RSS is the parent's, route workers report theirs separately

The baseline of the same run is each step on the 2-route seed tree (fixed costs: imports, pools); the
ratio column is size / seed. Targets (issue 15, at 3 M frames) are printed next to the figures. Prints a
table, then as the very last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _report import git_commit, machine, print_rows

HERE = Path(__file__).resolve()
STEPS = (
    "index_noop",
    "shard_noop",
    "shard_replan",
    "bucket_rebuild",
    "loader_cold",
    "loader_warm",
    "epoch_start",
    "index_add",
    "shard_add",
    "index_full",
)
DEFAULT_STEPS = STEPS[:-1]  # index_full re-reads every route: only when asked (--steps ... index_full)
TARGETS = {  # at 3 M frames (issue 15)
    "index_noop": "<= 5 s",
    "index_add": "<= 5 s, <= 1 GB",
    "index_full": "peak <= 2 GB",
    "shard_noop": "<= 3 s",
    "shard_add": "<= 10 s + the route's build, <= 1 GB",
    "loader_warm": "<= 3 s",
    "epoch_start": "stall <= 1 s; rank <= 150 B/sample private; workers flat",
}


# --------------------------------------------------------------------------------------------------
# growing a data root
# --------------------------------------------------------------------------------------------------
def _seed(root: Path, frames: int) -> None:
    from lead_stream.cache.shard import ShardConfig, write_shards
    from lead_stream.index import IndexConfig, build_index
    from lead_stream.synthetic import write_synthetic_lead

    write_synthetic_lead(root, num_routes=2, num_frames=frames, num_rejected=0, workers=2)
    build_index(root, config=IndexConfig(workers=2, progress=False))
    write_shards(root, config=ShardConfig(workers=2, progress=False))


def _link_route(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name in ("metas", "bboxes"):
            (target / entry.name).mkdir()
            for f in entry.iterdir():
                os.link(f, target / entry.name / f.name)
        elif entry.is_file():
            os.link(entry, target / entry.name)
        else:
            (target / entry.name).symlink_to(entry.resolve(), target_is_directory=True)


def _stamps(args: tuple[str, list[str]]) -> list[tuple[str, str]]:
    from lead_stream.index.route_rows import route_stamp
    from lead_stream.sources.stores import open_store

    root, route_ids = args
    out = []
    for rid in route_ids:
        locator = f"data/{rid}"
        out.append((route_stamp(Path(root), (locator,)), open_store(Path(root), locator).fingerprint(rid)))
    return out


def _grow(seed: Path, root: Path, num_frames: int) -> int:
    """A data root with ~num_frames frames: seed routes cloned under new ids (module doc)."""
    import polars as pl
    import pyarrow as pa

    from lead_stream.cache.manifest import read_manifest, resolve_cache_dir
    from lead_stream.cache.manifest_store import samples_dir, write_all_parts, write_table
    from lead_stream.cache.unchanged import input_stamps
    from lead_stream.index.collections import write_collections
    from lead_stream.index.frame_store import FrameWriter, scan_frames, write_placement
    from lead_stream.index.tables import table_path, write_parquet
    from lead_stream.schemas.tables import BUILD_ID_KEY, ROUTES_SCHEMA, conform

    seed_routes = pl.read_parquet(table_path(seed, "routes"))
    seed_frames = scan_frames(seed).collect()
    per_route = seed_frames.height // seed_routes.height
    count = max(num_frames // per_route, 1)
    grown = [f"{rid}_g{i:06d}" for i in range(count) for rid in [seed_routes["route_id"][i % 2]]]
    for i, rid in enumerate(grown):
        _link_route(seed / "data" / seed_routes["route_id"][i % 2], root / "data" / rid)
    chunks = [(str(root), grown[i : i + 256]) for i in range(0, count, 256)]
    with ProcessPoolExecutor(2) as pool:
        stamps = [s for part in pool.map(_stamps, chunks) for s in part]

    mapping = pl.DataFrame(
        {
            "grown": grown,
            "src": [seed_routes["route_id"][i % 2] for i in range(count)],
            "fp": [fp for _, fp in stamps],
            "stamp": [st for st, _ in stamps],
        }
    )
    writer = FrameWriter(root, "zstd")
    frames = mapping.join(seed_frames, left_on="src", right_on="route_id", maintain_order="left")
    frames = frames.with_columns(route_id=pl.col("grown")).select(seed_frames.columns)
    step = per_route * max((1 << 15) // per_route, 1)  # whole routes per slice
    for start in range(0, frames.height, step):
        writer.add(frames.slice(start, step).to_arrow())
    routes_df = mapping.join(seed_routes, left_on="src", right_on="route_id", maintain_order="left")
    routes_df = routes_df.with_columns(
        route_id=pl.col("grown"),
        source=pl.lit("data/") + pl.col("grown"),
        stat_stamp=pl.col("stamp"),
        fingerprint=pl.col("fp"),
    ).select(seed_routes.columns)
    rows = routes_df.to_dicts()
    (root / "index").mkdir(parents=True, exist_ok=True)
    placement = writer.finish(root, {}, set(), [])
    build_id = uuid.uuid4().hex
    write_placement(root, placement, build_id)
    write_collections(root)
    routes = pa.Table.from_pylist(rows, schema=ROUTES_SCHEMA)
    write_parquet(
        conform(routes, "routes", metadata={BUILD_ID_KEY: build_id}), table_path(root, "routes"), "zstd"
    )

    manifest = read_manifest(resolve_cache_dir(seed))
    cache_dir = root / "cache" / manifest.pipeline_id
    cache_dir.mkdir(parents=True)
    seed_state = pl.read_parquet(manifest.cache_dir / "routes.parquet")
    shards = manifest.shards
    shard_rows = []
    shard_of = {}
    for i, rid in enumerate(grown):
        src = seed_routes["route_id"][i % 2]
        for j, shard in enumerate(shards.filter(pl.col("route_id") == src).iter_rows(named=True)):
            name = f"shard-{i * 4 + j:06d}.tar"
            os.link(manifest.cache_dir / shard["shard"], cache_dir / name)
            shard_rows.append(
                {**shard, "shard": name, "route_id": rid, "route_fingerprint": rows[i]["fingerprint"]}
            )
            shard_of[(rid, shard["shard"])] = name
    names = pl.DataFrame(
        {"grown": [k[0] for k in shard_of], "shard": [k[1] for k in shard_of], "new": list(shard_of.values())}
    )
    samples = (
        names.join(manifest.samples, on="shard", maintain_order="left")
        .join(mapping.select("grown", "fp"), on="grown", maintain_order="left")
        .with_columns(shard=pl.col("new"), route_id=pl.col("grown"), route_fingerprint=pl.col("fp"))
        .select(manifest.samples.columns)
    )
    route_rows = (
        mapping.join(seed_state, left_on="src", right_on="route_id", maintain_order="left")
        .with_columns(route_id=pl.col("grown"), route_fingerprint=pl.col("fp"))
        .select(seed_state.columns)
        .to_dicts()
    )
    all_samples = samples
    placement = write_all_parts(cache_dir, all_samples.to_arrow())
    route_table = pl.DataFrame(route_rows).with_columns(part=pl.col("route_id").replace_strict(placement))
    write_table(cache_dir, "routes", route_table.to_arrow())
    write_table(cache_dir, "shards", pl.DataFrame(shard_rows).to_arrow())
    write_table(cache_dir, "failures", manifest.failures.to_arrow())
    info = dict(manifest.info, num_samples=all_samples.height, num_shards=len(shard_rows))
    info.update(num_routes=count, size_bytes=int(sum(r["size_bytes"] for r in shard_rows)))
    info["inputs"] = input_stamps(root, manifest.info["config"]["collections"])  # planned from this index
    (cache_dir / "manifest.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    assert samples_dir(cache_dir).is_dir()
    return count * per_route


# --------------------------------------------------------------------------------------------------
# steps (each in its own process)
# --------------------------------------------------------------------------------------------------
def _private_mb(pid: int | str = "self") -> float:
    """Private_Clean + Private_Dirty of a process in MB (pages no other process shares)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def _peak_rss_mb() -> float:
    """VmHWM of this process in MB (reset by exec, unlike ru_maxrss, which inherits the parent's peak)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    """User + system CPU seconds of this process and of its finished children (route / stamp workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _step(name: str, root: Path, seed: Path) -> dict:
    started, cpu_started = time.perf_counter(), _cpu_s()
    out: dict = {}
    if name in ("index_noop", "index_add"):
        from lead_stream.index import IndexConfig, build_index

        if name == "index_add":
            rid = next((root / "data").glob("*/*")).relative_to(root / "data")
            source = seed / "data" / str(rid).rsplit("_g", 1)[0]
            target = root / "data" / f"{rid.parent}/{source.name}_added"
            shutil.copytree(source, target, symlinks=False)
            started, cpu_started = time.perf_counter(), _cpu_s()
        summary = build_index(root, config=IndexConfig(workers=2, progress=False))
        out.update(read=summary.num_reread, frames=summary.num_frames)
    elif name == "index_full":  # every route read again (real meta pickles, hard links of the seed's)
        from lead_stream.index import IndexConfig, build_index

        summary = build_index(root, config=IndexConfig(workers=2, progress=False, force=True))
        out.update(read=summary.num_reread, frames=summary.num_frames)
    elif name in ("shard_noop", "shard_replan", "shard_add"):
        from lead_stream.cache.shard import ShardConfig, write_shards

        if name == "shard_replan":  # as if `index` had rewritten its tables with the same rows
            from lead_stream.index.tables import table_path

            for table in ("routes", "pretrain", "posttrain"):
                path = table_path(root, table)
                os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))

        summary = write_shards(root, config=ShardConfig(workers=2, progress=False))
        out.update(built=summary.num_routes_built, samples=summary.num_samples)
    elif name == "bucket_rebuild":
        from lead_stream.index.collections import write_collections

        out["collections"] = write_collections(root, rebuild=True)
    elif name in ("loader_cold", "loader_warm"):
        from lead_stream.loader import LoaderConfig, make_loader

        loader = make_loader(root, config=LoaderConfig(batch_size=4, num_workers=2, epoch_size=16))
        out["make_loader_s"] = time.perf_counter() - started
        next(iter(loader))
        out["samples"] = loader.catalog.num_samples
        out["rank_private_mb"] = _private_mb()
    elif name == "epoch_start":
        from lead_stream.loader import LoaderConfig, make_loader

        loader = make_loader(root, config=LoaderConfig(batch_size=4, num_workers=2, epoch_size=16))
        out["samples"] = loader.catalog.num_samples
        for _ in loader:
            pass
        pids = [w.pid for w in loader._dataloader._iterator._workers]
        stalls, workers = [], []
        for epoch in (1, 2, 3):
            t0 = time.perf_counter()
            loader.set_epoch(epoch)
            batches = iter(loader)
            next(batches)
            stalls.append(time.perf_counter() - t0)
            for _ in batches:
                pass
            workers.append([round(_private_mb(p), 1) for p in pids])
        out.update(stall_s=stalls, worker_private_mb=workers, rank_private_mb=_private_mb())
    out["seconds"] = time.perf_counter() - started
    out["cpu_s"] = _cpu_s() - cpu_started
    out["peak_rss_mb"] = _peak_rss_mb()
    out["children_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child
    return out


def _run_step(name: str, root: Path, seed: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(HERE), "--step", name, "--root", str(root), "--seed-root", str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"step {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _figure(name: str, r: dict) -> str:
    text = f"{r['seconds']:.2f}s ({r.get('cpu_s', 0):.1f} CPU-s), peak {r['peak_rss_mb']:.0f} MB"
    if name == "epoch_start":
        stalls = "/".join(f"{s:.2f}" for s in r["stall_s"])
        workers = " ".join("/".join(f"{m:.0f}" for m in w) for w in r["worker_private_mb"])
        per = r["rank_private_mb"] * 1e6 / max(r["samples"], 1)
        text = (
            f"stall {stalls}s; rank private {r['rank_private_mb']:.0f} MB ({per:.0f} B/sample); "
            f"workers private MB per epoch {workers}"
        )
    elif name.startswith("loader"):
        per = r["rank_private_mb"] * 1e6 / max(r["samples"], 1)
        text += f", make_loader {r['make_loader_s']:.2f}s, rank private {r['rank_private_mb']:.0f} MB ({per:.0f} B/sample)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 k frames only (under a minute or two)")
    parser.add_argument("--sizes", type=int, nargs="*", help="frame counts (default 1 M and 3 M)")
    parser.add_argument(
        "--steps", nargs="*", choices=STEPS, help="run only these steps (default: all, in the order listed)"
    )
    parser.add_argument("--work-dir", type=Path, help="where to generate (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the grown roots (with --work-dir)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed-root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(_step(args.step, args.root, args.seed_root)))
        return
    steps = [name for name in STEPS if name in (args.steps or DEFAULT_STEPS)]
    sizes = args.sizes or ([100_000] if args.quick else [1_000_000, 3_000_000])
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        seed = work / "seed"
        t0 = time.perf_counter()
        _seed(seed, 40 if args.quick else 100)
        base_copy = work / "seed_steps"
        shutil.copytree(seed, base_copy, symlinks=True)
        baseline = {name: _run_step(name, base_copy, seed) for name in steps}
        print(f"seed: 2 routes generated, indexed and sharded in {time.perf_counter() - t0:.1f}s", flush=True)
        results = {}
        for size in sizes:
            root = work / f"grown_{size}"
            t0 = time.perf_counter()
            frames = _grow(seed, root, size)
            print(f"grown to {frames:,} frames in {time.perf_counter() - t0:.1f}s", flush=True)
            results[size] = {"frames": frames, **{name: _run_step(name, root, seed) for name in steps}}
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    rows = [("step", "baseline (2-route seed)  |  " + "  |  ".join(f"{s:,} frames" for s in sizes))]
    for name in steps:
        cells = [_figure(name, baseline[name])] + [_figure(name, results[s][name]) for s in sizes]
        ratio = "  ".join(
            f"x{results[s][name]['seconds'] / max(baseline[name]['seconds'], 1e-9):.1f}" for s in sizes
        )
        target = f"  (target at 3 M: {TARGETS[name]})" if name in TARGETS else ""
        rows.append((name, "  |  ".join(cells) + f"  ratio {ratio}{target}"))
    print_rows(rows)
    print(
        json.dumps(
            {
                "baseline": baseline,
                "candidate": {str(s): r for s, r in results.items()},
                "ratio": {
                    str(s): {n: round(r[n]["seconds"] / max(baseline[n]["seconds"], 1e-9), 2) for n in steps}
                    for s, r in results.items()
                },
                "machine": machine(),
                "git_commit": git_commit(),
            }
        )
    )


if __name__ == "__main__":
    main()
