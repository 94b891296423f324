"""Index bucket tables → WebDataset tar shards + Parquet manifest (the persistent cache).

Input: `<data_root>/index/` (routes.parquet fingerprints, buckets/<collection>.parquet members).
Output: `<data_root>/cache/<pipeline_id>/shard-NNNNNN.tar`, `journal/`, `samples.parquet`,
`shards.parquet`, `failures.parquet` and, LAST, `manifest.json` (its presence = a complete cache).

Each selected frame (union of the configured bucket collections) becomes one sample keyed
"<route_id>/<frame_idx:04d>" ('.' → '_') with the members of `features.MEMBERS`. Shards never mix routes,
so an unchanged route keeps its shards on a rebuild. Write order per shard: `*.tar.tmp` → its journal entry
`journal/shard-NNNNNN.json` (the shard's row + its samples' rows as columns) → rename to
`shard-NNNNNN.tar`; after a route's last shard its record
`journal/route-<hash>.json` is written. A kill therefore leaves only `*.tmp` files and shards that have a
journal entry; the next run deletes the tmp files and the shards of unfinished routes, rebuilds those
routes and reuses every finished route whose index fingerprint and frame set are unchanged.
`pipeline_id` hashes the content-affecting config, `features.PREPROCESS_VERSION` and the source of the
preprocessing modules, so a code or config change starts a new cache directory.
The tar bytes and the journal files are written by `tar_writer`, the chunks by `chunks`; this module decides what goes where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lead_stream.cache.changes import (
    changes_from_journal,
    changes_from_state,
    input_stamps,
    record_is_current,
    routes_with_bad_shards,
)
from lead_stream.cache.chunks import (
    BUILD_TMP_PREFIX,
    ChunkTask,
    RoutePlan,
    build_chunk,
    build_plan,
    route_chunks,
    routes_of_rank,
)
from lead_stream.cache.identity import pipeline_id, pipeline_identity
from lead_stream.cache.manifest import (
    MANIFEST_FILENAME,
    VERIFY_FAILED_FILENAME,
    cache_root,
    read_manifest_info,
)
from lead_stream.cache.manifest_store import (
    CacheState,
    ManifestCounts,
    read_state,
    update_manifest,
    write_manifest,
)
from lead_stream.cache.tar_writer import (
    delete_shard,
    journal_dir,
    journal_entry,
    load_journal,
    number_sequence,
    read_shard_entry,
    route_record_path,
    shard_journal_path,
    shard_name,
)
from lead_stream.core.atomic import atomic_write_text, remove_stale_tmp
from lead_stream.core.errors import ConfigError, LeadFormatError, LeadStreamError
from lead_stream.core.locks import exclusive_lock

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
LOCK_FILENAME = ".shard.lock"  # held by the one `shard` run writing this cache directory
CONTENT_FIELDS = ("collections",)  # what the samples are; packing (how they are cut into shards) is not
PACKING_FIELDS = ("max_samples_per_shard", "max_shard_bytes")  # recorded in the manifest, not in the id


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    # --- selection ---
    collections: tuple[str, ...] = ("pretrain", "posttrain")  # samples = union of these bucket tables' frames
    # --- packing ---
    max_samples_per_shard: int = 1000  # close a shard after this many samples...
    max_shard_bytes: int = 384 << 20  # ...or once it reaches this size (a shard never mixes routes)
    # --- execution (not part of the pipeline id) ---
    cache_root: Path | None = None  # where cache/<pipeline_id>/ goes; None = <data_root>/cache
    workers: int | None = None  # build processes; None = os.cpu_count(); 1 = in this process
    progress: bool = True  # tqdm bar on stderr (samples/s, MB/s)
    strict: bool = False  # first unreadable frame raises LeadFormatError (else: failure row)
    retry_failed: bool = False  # rebuild every route that has failure rows (after fixing its files)
    rank: int = 0  # this machine's part of a distributed build...
    world_size: int = 1  # ...routes i (sorted) with i % world_size == rank; merge with --merge
    wait_for_lock: bool = True  # another shard run holds this cache: wait for it (False: fail naming it)

    def __post_init__(self) -> None:
        if isinstance(self.collections, str) or not self.collections:
            raise ConfigError(f"collections must be a non-empty tuple of names, got {self.collections!r}")
        if self.max_samples_per_shard < 1 or self.max_shard_bytes < 1:
            raise ConfigError("max_samples_per_shard and max_shard_bytes must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1 or None, got {self.workers}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got {self.rank=} {self.world_size=}")

    def content(self) -> dict[str, Any]:
        """The fields that change what the cache holds (they enter the pipeline id)."""
        return {
            name: list(v) if isinstance(v := getattr(self, name), tuple) else v for name in CONTENT_FIELDS
        }

    def packing(self) -> dict[str, int]:
        """How samples are cut into shards (a rebuild with other values reuses every unchanged route's shards)."""
        return {name: getattr(self, name) for name in PACKING_FIELDS}

    def cache_dir(self, data_root: Path) -> Path:
        """`<cache_root or data_root/cache>/<pipeline_id>`."""
        return (Path(self.cache_root) if self.cache_root else cache_root(data_root)) / pipeline_id(self)


@dataclass(frozen=True)
class ShardSummary:
    """What one `write_shards` / `merge_manifests` call did."""

    cache_dir: Path
    pipeline_id: str
    complete: bool  # manifest.json written (False for one rank of a distributed build)
    num_samples: int  # in the manifest (complete) or in this rank's routes
    num_shards: int
    num_failures: int
    num_routes_built: int
    num_routes_reused: int
    num_samples_built: int  # samples written by this call
    bytes_written: int  # shard bytes written by this call
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.num_samples_built / self.seconds if self.seconds > 0 else 0.0

    def one_line(self) -> str:
        state = "complete" if self.complete else "partial"
        return (
            f"{state} cache {self.cache_dir}: {self.num_samples:,} samples in "
            f"{self.num_shards:,} shards, "
            f"{self.num_failures} failures; built {self.num_routes_built} routes "
            f"({self.num_samples_built:,} samples, {self.bytes_written / 1e6:.1f} MB, "
            f"{self.samples_per_s:.1f} samples/s), reused {self.num_routes_reused}"
        )


def _lock_path(cache_dir: Path, config: ShardConfig) -> Path:
    """One writer per cache directory (per rank in a distributed build; merge takes the single-build lock)."""
    if config.world_size == 1:
        return cache_dir / LOCK_FILENAME
    return cache_dir / f".shard-rank-{config.rank}-of-{config.world_size}.lock"


def _cache_lock(cache_dir: Path, config: ShardConfig) -> contextlib.AbstractContextManager[None]:
    return exclusive_lock(
        _lock_path(cache_dir, config), wait=config.wait_for_lock, what=f"shard cache {cache_dir.name}"
    )


def _partial_manifest_path(cache_dir: Path, rank: int, world_size: int) -> Path:
    return cache_dir / f"manifest-rank-{rank}-of-{world_size}.json"


def _after_shard_renamed(path: Path) -> None:
    """Hook called after each finished shard is renamed into place (tests inject a crash here)."""


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="sample",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        desc="shard",
        smoothing=0.1,
    )


def _identity(config: ShardConfig, data_root: Path) -> dict[str, Any]:
    return {
        **pipeline_identity(config),
        "inputs": input_stamps(data_root, config.collections),
        "packing": config.packing(),  # of the build that wrote the manifest; reused routes keep theirs
    }


def _complete(cache_dir: Path, pid: str, counts: ManifestCounts) -> ShardSummary:
    return ShardSummary(
        cache_dir, pid, True, counts.num_samples, counts.num_shards, counts.num_failures, 0, 0, 0, 0, 0.0
    )


def _unchanged_summary(
    cache_dir: Path, pid: str, state: CacheState, num_routes: int, started: float
) -> ShardSummary:
    info = state.info
    return ShardSummary(
        cache_dir,
        pid,
        True,
        int(info["num_samples"]),
        int(info["num_shards"]),
        int(info["num_failures"]),
        0,
        num_routes,
        0,
        0,
        time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------------
def write_shards(data_root: Path, *, config: ShardConfig = ShardConfig()) -> ShardSummary:
    """Build (or incrementally update) this rank's part of the shard cache of `data_root`.

    With world_size 1 the manifest is written at the end (complete cache). With world_size > 1 this rank
    writes `manifest-rank-R-of-W.json` and `merge_manifests` (CLI: `lead-stream shard --merge`) writes the
    final manifest once every rank is done.

    Args:
        data_root: LEAD data root with `index/` built.
        config: what to build and how.

    Returns:
        Counts, paths and throughput of this call.

    Raises:
        LeadFormatError: missing/stale index; with `config.strict`, the first unreadable frame.
    """
    started = time.perf_counter()
    data_root = Path(data_root)
    pid = pipeline_id(config)
    cache_dir = config.cache_dir(data_root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _cache_lock(cache_dir, config):  # a concurrent run on this cache waits here (or fails)
        if config.world_size == 1 and not config.retry_failed:  # a no-op: small tables and stats only
            state = read_state(cache_dir)
            if (
                state is not None
                and state.info.get("inputs") == input_stamps(data_root, config.collections)
                and not routes_with_bad_shards(state, cache_dir)
            ):
                if config.strict:
                    _refuse_recorded_failures(data_root, [], [], {}, state)
                return _unchanged_summary(cache_dir, pid, state, state.routes.num_rows, started)
        plan = build_plan(data_root, config.collections)
        try:
            return _write_shards_locked(data_root, cache_dir, pid, plan, config, started)
        except OSError as error:
            if error.errno not in _DISK_FULL:
                raise
            raise _disk_full(data_root, cache_dir, config, error) from None


def _disk_full(data_root: Path, cache_dir: Path, config: ShardConfig, error: OSError) -> LeadFormatError:
    """Remove this run's unfinished files and name the full disk (finished, journaled shards stay)."""
    if config.world_size == 1:
        remove_stale_tmp(cache_dir)
    else:
        for stale in cache_dir.glob(f"{BUILD_TMP_PREFIX}-{config.rank}-*.tmp"):
            stale.unlink(missing_ok=True)
    free_mb = shutil.disk_usage(cache_dir).free / 1e6
    records, _ = load_journal(cache_dir)
    return LeadFormatError(
        cache_dir,
        f"{os.strerror(error.errno)} while writing {Path(error.filename).name if error.filename else 'the cache'} "
        f"({free_mb:.1f} MB free); nothing half-written is left and {len(records)} finished routes are kept: "
        f"free space, then rerun lead-stream shard {data_root}",
    )


def _write_shards_locked(
    data_root: Path, cache_dir: Path, pid: str, plan: list[RoutePlan], config: ShardConfig, started: float
) -> ShardSummary:
    journal_dir(cache_dir).mkdir(exist_ok=True)
    if config.world_size == 1:
        remove_stale_tmp(cache_dir)
    else:
        for stale in cache_dir.glob(f"{BUILD_TMP_PREFIX}-{config.rank}-*.tmp"):
            stale.unlink(missing_ok=True)

    mine = routes_of_rank(plan, config.rank, config.world_size)
    mine_ids = {route.route_id for route in mine}
    cache_state = read_state(cache_dir) if config.world_size == 1 else None
    if cache_state is not None:  # a complete layout-2 cache: decide from its small tables, not the journal
        to_build, obsolete, removed = changes_from_state(cache_state, plan, cache_dir, config.retry_failed)
        if not to_build and not obsolete and not removed:
            if config.strict:
                _refuse_recorded_failures(data_root, mine, to_build, {}, cache_state)
            return _unchanged_summary(cache_dir, pid, cache_state, len(plan), started)
        records: dict[str, dict] = {}
    else:
        records, to_build, obsolete, removed = changes_from_journal(
            cache_dir, plan, mine, mine_ids, world_size=config.world_size, retry_failed=config.retry_failed
        )
    reused = len(mine) - len(to_build)
    if config.strict:  # a failure recorded by an earlier run is as much an error as a new one
        _refuse_recorded_failures(data_root, mine, to_build, records, cache_state)
    stale_ids = {r.route_id for r in to_build}
    (cache_dir / MANIFEST_FILENAME).unlink(missing_ok=True)  # the cache is no longer complete
    for shard in obsolete:
        delete_shard(cache_dir, shard)
    for route_id in stale_ids | removed:
        route_record_path(cache_dir, route_id).unlink(missing_ok=True)
        records.pop(route_id, None)
    (cache_dir / VERIFY_FAILED_FILENAME).unlink(missing_ok=True)

    tasks = [
        ChunkTask(
            data_root,
            cache_dir,
            route.route_id,
            i,
            frames,
            config.max_shard_bytes,
            config.rank,
            config.strict,
        )
        for route in to_build
        for i, frames in enumerate(route_chunks(route, config.max_samples_per_shard))
    ]
    by_id = {route.route_id: route for route in to_build}
    num_chunks = {
        route.route_id: len(route_chunks(route, config.max_samples_per_shard)) for route in to_build
    }
    numbers = number_sequence(cache_dir, config.rank, config.world_size)
    pending: dict[str, dict[str, Any]] = {}
    built_entries: list[dict[str, Any]] = []  # journal entries of the shards built now (columnar rows)
    built_samples = built_bytes = 0
    bar = _progress_bar(sum(len(t.frames) for t in tasks), config.progress)
    workers = min(config.workers or os.cpu_count() or 1, max(len(tasks), 1))
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(build_chunk, tasks, chunksize=1) if pool else map(build_chunk, tasks)
        for result in results:
            route = by_id[result.route_id]
            state = pending.setdefault(route.route_id, {"shards": [], "failures": [], "chunks": 0})
            if config.strict and result.failures:
                for shard in result.shards:
                    shard.tmp_path.unlink(missing_ok=True)
                failure = result.failures[0]
                raise LeadFormatError(data_root / failure["file"], failure["reason"])
            for tmp in result.shards:
                name = shard_name(next(numbers))
                fingerprint = route.fingerprint
                shard_row = {
                    "shard": name,
                    "route_id": route.route_id,
                    "route_fingerprint": fingerprint,
                    "num_samples": len(tmp.samples),
                    "size_bytes": tmp.size_bytes,
                    "sha256": tmp.sha256,
                }
                entry = journal_entry(shard_row, tmp.samples)
                atomic_write_text(shard_journal_path(cache_dir, name), json.dumps(entry, sort_keys=True))
                built_entries.append(entry)
                os.replace(tmp.tmp_path, cache_dir / name)
                _after_shard_renamed(cache_dir / name)
                state["shards"].append(name)
            state["failures"].extend(result.failures)
            state["chunks"] += 1
            built_samples += result.num_samples
            built_bytes += result.size_bytes
            bar.update(result.num_samples + len(result.failures))
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{built_bytes / 1e6 / elapsed:.1f} MB/s", refresh=False)
            if state["chunks"] == num_chunks[route.route_id]:
                record = {
                    "route_id": route.route_id,
                    "route_fingerprint": route.fingerprint,
                    "frames": list(route.frames),
                    "shards": state["shards"],
                    "failures": state["failures"],
                }
                atomic_write_text(
                    route_record_path(cache_dir, route.route_id), json.dumps(record, sort_keys=True)
                )
                records[route.route_id] = record
                del pending[route.route_id]
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()

    if cache_state is not None:
        counts = update_manifest(
            cache_dir,
            pid,
            _identity(config, data_root),
            plan,
            cache_state,
            stale_ids | removed,
            built_entries,
            records,
        )
        summary = _complete(cache_dir, pid, counts)
    elif config.world_size == 1:
        summary = _complete(
            cache_dir, pid, write_manifest(cache_dir, pid, _identity(config, data_root), plan)
        )
    else:
        mine_records = [records[r.route_id] for r in mine]
        partial = {
            "pipeline_id": pid,
            "rank": config.rank,
            "world_size": config.world_size,
            "routes": sorted(mine_ids),
            "num_samples": sum(_record_samples(cache_dir, r) for r in mine_records),
            "num_shards": sum(len(r["shards"]) for r in mine_records),
            "num_failures": sum(len(r["failures"]) for r in mine_records),
        }
        atomic_write_text(
            _partial_manifest_path(cache_dir, config.rank, config.world_size),
            json.dumps(partial, sort_keys=True, indent=1),
        )
        summary = ShardSummary(
            cache_dir,
            pid,
            False,
            partial["num_samples"],
            partial["num_shards"],
            partial["num_failures"],
            0,
            0,
            0,
            0,
            0.0,
        )
    return dataclasses.replace(
        summary,
        num_routes_built=len(to_build),
        num_routes_reused=reused,
        num_samples_built=built_samples,
        bytes_written=built_bytes,
        seconds=time.perf_counter() - started,
    )


def _refuse_recorded_failures(
    data_root: Path,
    mine: list[RoutePlan],
    to_build: list[RoutePlan],
    records: dict[str, dict],
    state: CacheState | None,
) -> None:
    """`--strict` on a cache whose reused routes carry failure rows: the first one, as a named error."""
    building = {r.route_id for r in to_build}
    reused = [r.route_id for r in mine if r.route_id not in building]
    if state is not None:  # layout 2: the failures table of the complete cache (all of it when mine is [])
        kept = set(reused)
        failures = [f for f in state.failures.to_pylist() if not mine or f["route_id"] in kept]
    else:
        failures = [f for route_id in reused if route_id in records for f in records[route_id]["failures"]]
    if failures:
        failure = failures[0]
        raise LeadFormatError(
            data_root / failure["file"],
            f"{failure['reason']} (recorded by an earlier shard run; --strict accepts no failure: repair "
            f"the file, then lead-stream index and lead-stream shard again, or shard --retry-failed)",
        )


def _record_samples(cache_dir: Path, record: dict) -> int:
    total = 0
    for shard in record["shards"]:
        entry = read_shard_entry(shard_journal_path(cache_dir, shard))
        total += len(entry["samples"]) if entry else 0
    return total


def repair_cache(cache_dir: Path, *, data_root: Path | None = None, progress: bool = False) -> ShardSummary:
    """Rebuild the routes of the shards the last `verify` found missing or corrupt, with the cache's config.

    Args:
        cache_dir: `<cache root>/<pipeline_id>/` (complete).
        data_root: the LEAD data root it was built from (default: the cache root's parent, the default place).
        progress: tqdm bar.
    """
    cache_dir = Path(cache_dir)
    info = read_manifest_info(cache_dir)
    stored = {**info["config"], **info.get("packing", {})}
    root = Path(data_root) if data_root is not None else cache_dir.parent.parent
    config = ShardConfig(
        collections=tuple(stored["collections"]),
        max_samples_per_shard=stored.get("max_samples_per_shard", ShardConfig().max_samples_per_shard),
        max_shard_bytes=stored.get("max_shard_bytes", ShardConfig().max_shard_bytes),
        cache_root=cache_dir.parent,  # where this cache is (not part of the pipeline id)
        progress=progress,
    )
    if pipeline_id(config) != cache_dir.name:
        raise ConfigError(
            f"{cache_dir}: its stored config gives pipeline id {pipeline_id(config)}; rebuild it"
        )
    return write_shards(root, config=config)


def merge_manifests(data_root: Path, *, config: ShardConfig = ShardConfig()) -> ShardSummary:
    """Join the journal of a distributed build (all ranks done) into the final manifest.

    Raises:
        LeadStreamError: some planned route has no finished record (a rank has not finished).
    """
    started = time.perf_counter()
    data_root = Path(data_root)
    plan = build_plan(data_root, config.collections)
    pid = pipeline_id(config)
    cache_dir = config.cache_dir(data_root)
    with exclusive_lock(cache_dir / LOCK_FILENAME, wait=config.wait_for_lock, what=f"shard cache {pid}"):
        summary = _merge_locked(data_root, cache_dir, pid, plan, config)
    return dataclasses.replace(summary, seconds=time.perf_counter() - started)


def _merge_locked(
    data_root: Path, cache_dir: Path, pid: str, plan: list[RoutePlan], config: ShardConfig
) -> ShardSummary:
    records, shard_entries = load_journal(cache_dir)
    missing = [
        r.route_id
        for r in plan
        if not record_is_current(records.get(r.route_id), r, shard_entries, cache_dir)
    ]
    if missing:
        partials = sorted(p.name for p in cache_dir.glob("manifest-rank-*-of-*.json"))
        raise LeadStreamError(
            f"{cache_dir}: {len(missing)} routes not built yet (e.g. {missing[0]!r}); "
            f"partial manifests present: {partials or 'none'}"
        )
    remove_stale_tmp(cache_dir)
    keep = {shard for r in plan for shard in records[r.route_id]["shards"]}
    for shard in sorted(set(shard_entries) | {p.name for p in cache_dir.glob("shard-*.tar")}):
        if shard not in keep:
            delete_shard(cache_dir, shard)
    planned_ids = {r.route_id for r in plan}
    for route_id in records:
        if route_id not in planned_ids:
            route_record_path(cache_dir, route_id).unlink(missing_ok=True)
    summary = _complete(cache_dir, pid, write_manifest(cache_dir, pid, _identity(config, data_root), plan))
    for partial in cache_dir.glob("manifest-rank-*-of-*.json"):
        partial.unlink()
    return summary
