"""The build plan + what the cache holds → which routes `shard` must build and which shards are obsolete.

Two sources of truth: a complete layout-2 cache answers from its small `routes`/`shards`/`failures`
tables (`changes_from_state`: stats of the shard files, no sample rows, no journal), anything else (a
killed build, a layout-1 cache, one rank of a distributed build) from the journal of finished shards and
routes (`changes_from_journal`). A route is rebuilt when its index fingerprint (every file it reads) or
its selected frames changed, a shard of it is missing or has another size, `verify` found one of its
shards corrupt (`verify-failed.json`), or it has failure rows and `retry_failed` is set.
"""

from __future__ import annotations

from pathlib import Path

from lead_stream.cache.chunks import RoutePlan
from lead_stream.cache.manifest_store import CacheState
from lead_stream.cache.tar_writer import load_journal
from lead_stream.cache.unchanged import routes_with_bad_shards, verify_failed


def record_is_current(
    record: dict | None, route: RoutePlan, shard_entries: dict[str, dict], cache_dir: Path
) -> bool:
    """A journal route record still describes `route`: same fingerprint and frames, every shard present."""
    if record is None or record["route_fingerprint"] != route.fingerprint:
        return False
    if tuple(record["frames"]) != route.frames:
        return False
    corrupt = set(verify_failed(cache_dir))
    for shard in record["shards"]:
        entry = shard_entries.get(shard)
        path = cache_dir / shard
        if entry is None or not path.is_file() or path.stat().st_size != entry["shard"]["size_bytes"]:
            return False
        if shard in corrupt:
            return False
    return True


def changes_from_journal(
    cache_dir: Path,
    plan: list[RoutePlan],
    mine: list[RoutePlan],
    mine_ids: set[str],
    *,
    world_size: int,
    retry_failed: bool,
) -> tuple[dict[str, dict], list[RoutePlan], list[str], set[str]]:
    """(journal records, routes to build, obsolete shards, removed routes), reading the whole journal."""
    records, shard_entries = load_journal(cache_dir)
    planned_ids = {route.route_id for route in plan}
    to_build = [
        r
        for r in mine
        if not record_is_current(records.get(r.route_id), r, shard_entries, cache_dir)
        or (retry_failed and records[r.route_id]["failures"])
    ]
    stale_ids = {r.route_id for r in to_build}
    keep: set[str] = set()
    for route_id, record in records.items():
        if route_id in planned_ids and route_id not in stale_ids:
            keep.update(record["shards"])
    owned = {
        name
        for name, entry in shard_entries.items()
        if world_size == 1 or entry["shard"]["route_id"] in mine_ids
    }
    if world_size == 1:
        owned |= {p.name for p in cache_dir.glob("shard-*.tar")}
    removed = {r for r in records if r not in planned_ids} if world_size == 1 else set()
    return records, to_build, sorted(owned - keep), removed


def changes_from_state(
    state: CacheState, plan: list[RoutePlan], cache_dir: Path, retry_failed: bool
) -> tuple[list[RoutePlan], list[str], set[str]]:
    """(routes to build, obsolete shards, removed routes) of a complete layout-2 cache (module doc)."""
    routes = state.routes
    known = {
        rid: (fp, digest)
        for rid, fp, digest in zip(
            routes.column("route_id").to_pylist(),
            routes.column("route_fingerprint").to_pylist(),
            routes.column("frames_digest").to_pylist(),
        )
    }
    shard_names = state.shards.column("shard").to_pylist()
    shard_routes = state.shards.column("route_id").to_pylist()
    bad_routes = routes_with_bad_shards(state, cache_dir)
    if retry_failed:
        bad_routes.update(state.failures.column("route_id").to_pylist())
    to_build = [
        r for r in plan if known.get(r.route_id) != (r.fingerprint, r.digest) or r.route_id in bad_routes
    ]
    removed = set(known) - {r.route_id for r in plan}
    dropped = {r.route_id for r in to_build} | removed
    listed = set(shard_names)
    obsolete = [name for name, rid in zip(shard_names, shard_routes) if rid in dropped]
    obsolete += sorted(p.name for p in cache_dir.glob("shard-*.tar") if p.name not in listed)  # killed builds
    return to_build, obsolete, removed
