"""`shard --merge`: the journal of a distributed build (every rank done) → the final manifest.

Each rank of `lead-stream shard ROOT --rank R --world-size W` writes its routes' shards and journal records
and a partial manifest; the merge checks that every planned route has a current record, deletes shards no
record keeps (killed attempts), writes the manifest tables from the journal and, last, `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lead_stream.cache.changes import record_is_current
from lead_stream.cache.chunks import RoutePlan, build_plan
from lead_stream.cache.identity import pipeline_id
from lead_stream.cache.manifest_store import write_manifest
from lead_stream.cache.shard_config import (
    LOCK_FILENAME,
    ShardConfig,
    ShardSummary,
    complete_summary,
    identity_of,
)
from lead_stream.cache.tar_writer import delete_shard, load_journal, route_record_path
from lead_stream.core.atomic import remove_stale_tmp
from lead_stream.core.errors import LeadStreamError
from lead_stream.core.locks import exclusive_lock


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
    summary = complete_summary(
        cache_dir, pid, write_manifest(cache_dir, pid, identity_of(config, data_root), plan)
    )
    for partial in cache_dir.glob("manifest-rank-*-of-*.json"):
        partial.unlink()
    return summary
