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

import dataclasses
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

from lead_stream.cache.changes import changes_from_journal, changes_from_state
from lead_stream.cache.chunks import (
    ChunkTask,
    RoutePlan,
    build_chunk,
    build_plan,
    route_chunks,
    routes_of_rank,
)
from lead_stream.cache.identity import pipeline_id
from lead_stream.cache.manifest import MANIFEST_FILENAME, VERIFY_FAILED_FILENAME
from lead_stream.cache.manifest_store import read_state, update_manifest, write_manifest
from lead_stream.cache.merge import merge_manifests
from lead_stream.cache.repair import repair_cache
from lead_stream.cache.shard_config import (
    LOCK_FILENAME,
    ShardConfig,
    ShardSummary,
    cache_lock,
    complete_summary,
    identity_of,
    unchanged_summary,
)
from lead_stream.cache.shard_errors import DISK_FULL, disk_full, refuse_recorded_failures, remove_own_tmp
from lead_stream.cache.tar_writer import (
    delete_shard,
    journal_dir,
    journal_entry,
    number_sequence,
    read_shard_entry,
    route_record_path,
    shard_journal_path,
    shard_name,
)
from lead_stream.cache.unchanged import (
    CHECKED_FILENAME,
    Stamps,
    input_stamps,
    record_checked_stamps,
    unchanged_state,
)
from lead_stream.core.atomic import atomic_write_text
from lead_stream.core.errors import LeadFormatError

__all__ = [
    "LOCK_FILENAME",
    "ShardConfig",
    "ShardSummary",
    "merge_manifests",
    "repair_cache",
    "write_shards",
]


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
    with cache_lock(cache_dir, config):  # a concurrent run on this cache waits here (or fails)
        stamps = input_stamps(data_root, config.collections)  # before planning: what the plan is read from
        if config.world_size == 1 and not config.retry_failed:  # a no-op: metadata only (`unchanged`)
            state = unchanged_state(cache_dir, stamps)
            if state is not None:
                if config.strict:
                    refuse_recorded_failures(data_root, [], [], {}, state)
                return unchanged_summary(cache_dir, pid, state.info, started)
        plan = build_plan(data_root, config.collections)
        try:
            return _write_shards_locked(data_root, cache_dir, pid, plan, config, stamps, started)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            raise disk_full(data_root, cache_dir, config, error) from None


def _write_shards_locked(
    data_root: Path,
    cache_dir: Path,
    pid: str,
    plan: list[RoutePlan],
    config: ShardConfig,
    stamps: Stamps,
    started: float,
) -> ShardSummary:
    journal_dir(cache_dir).mkdir(exist_ok=True)
    remove_own_tmp(cache_dir, config)

    mine = routes_of_rank(plan, config.rank, config.world_size)
    mine_ids = {route.route_id for route in mine}
    cache_state = read_state(cache_dir) if config.world_size == 1 else None
    if cache_state is not None:  # a complete layout-2 cache: decide from its small tables, not the journal
        to_build, obsolete, removed = changes_from_state(cache_state, plan, cache_dir, config.retry_failed)
        if not to_build and not obsolete and not removed:  # the index was rewritten with the same content
            if config.strict:
                refuse_recorded_failures(data_root, mine, to_build, {}, cache_state)
            record_checked_stamps(cache_dir, stamps)  # so the next call is a metadata-only no-op
            return unchanged_summary(cache_dir, pid, cache_state.info, started)
        records: dict[str, dict] = {}
    else:
        records, to_build, obsolete, removed = changes_from_journal(
            cache_dir, plan, mine, mine_ids, world_size=config.world_size, retry_failed=config.retry_failed
        )
    reused = len(mine) - len(to_build)
    if config.strict:  # a failure recorded by an earlier run is as much an error as a new one
        refuse_recorded_failures(data_root, mine, to_build, records, cache_state)
    stale_ids = {r.route_id for r in to_build}
    (cache_dir / MANIFEST_FILENAME).unlink(missing_ok=True)  # the cache is no longer complete
    (cache_dir / CHECKED_FILENAME).unlink(missing_ok=True)
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
            identity_of(config, data_root, stamps),
            plan,
            cache_state,
            stale_ids | removed,
            built_entries,
            records,
        )
        summary = complete_summary(cache_dir, pid, counts)
    elif config.world_size == 1:
        summary = complete_summary(
            cache_dir, pid, write_manifest(cache_dir, pid, identity_of(config, data_root, stamps), plan)
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


def _record_samples(cache_dir: Path, record: dict) -> int:
    total = 0
    for shard in record["shards"]:
        entry = read_shard_entry(shard_journal_path(cache_dir, shard))
        total += len(entry["samples"]) if entry else 0
    return total
