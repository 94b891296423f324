"""`IndexConfig.verify_content` (`lead-stream index --verify-content`): hash every route's content, re-read the
routes whose content changed, store the hashes in routes.parquet's `content_hash` column.

A route is reused only when its stored hash equals the one computed now. A route without a stored hash (never
hashed: indexed without `--verify-content`, or by an older lead-stream) cannot be proven unchanged, so it is
read once more and its hash stored. A plain build keeps the stored hash of every reused route and stores null
for the routes it reads (their bytes were not hashed). The shard builder folds a stored hash into the route's
fingerprint (`effective_fingerprint`), so a content change reaches the cache too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from lead_stream.core.errors import LeadFormatError
from lead_stream.sources.content import content_hash
from lead_stream.sources.stores import open_store

CONTENT_COLUMN = "content_hash"  # routes.parquet: hex hash of the route's content, null if never hashed
POOL_CHUNK = 16  # routes per pool task (hashing reads whole routes: small chunks balance the workers)


@dataclass(frozen=True)
class ContentCheck:
    """What `check_content` found."""

    hashes: Mapping[str, str | None]  # route_id -> hash now (None: the route could not be read)
    unchanged: tuple[str, ...]  # routes to reuse: stored hash == hash now
    changed: tuple[str, ...]  # stored hash != hash now: re-read
    unhashed: tuple[str, ...]  # no stored hash: re-read once, hash stored

    def note(self) -> str:
        """One clause for the index summary line."""
        return (
            f"content verified: {len(self.hashes):,} routes hashed, {len(self.changed):,} changed, "
            f"{len(self.unhashed):,} hashed for the first time"
        )


def with_content_column(routes: pa.Table) -> pa.Table:
    """`routes` with a `content_hash` column (all null when a routes.parquet from before the column lacks it)."""
    if CONTENT_COLUMN in routes.column_names:
        return routes
    return routes.append_column(CONTENT_COLUMN, pa.nulls(routes.num_rows, pa.string()))


def check_content(
    data_root: Path,
    candidates: Sequence[str],
    sources: Mapping[str, Sequence[str]],
    stored: Mapping[str, str | None],
    workers: int,
) -> ContentCheck:
    """Hash every route of `sources` and split `candidates` (the routes the stat checks would reuse).

    Args:
        data_root: the data root.
        candidates: routes whose stamp (and fingerprint) say unchanged.
        sources: route_id -> locators of its copies (the first is the one read).
        stored: route_id -> the hash in the previous routes.parquet (None or absent: never hashed).
        workers: processes hashing routes (1: in this process).
    """
    route_ids = list(sources)
    hashes = _hash_routes(data_root, route_ids, [tuple(sources[rid]) for rid in route_ids], workers)
    unchanged, changed, unhashed = [], [], []
    for rid in candidates:
        old, new = stored.get(rid), hashes[rid]
        if old is None:
            unhashed.append(rid)
        elif new is None or old != new:
            changed.append(rid)
        else:
            unchanged.append(rid)
    return ContentCheck(hashes, tuple(unchanged), tuple(changed), tuple(unhashed))


def store_hashes(routes: pa.Table, hashes: Mapping[str, str | None]) -> pa.Table:
    """`routes` with `content_hash` set from `hashes` (routes not in it keep theirs)."""
    routes = with_content_column(routes)
    kept = routes.column(CONTENT_COLUMN).to_pylist()
    values = [hashes.get(rid, old) for rid, old in zip(routes.column("route_id").to_pylist(), kept)]
    position = routes.column_names.index(CONTENT_COLUMN)
    return routes.set_column(position, CONTENT_COLUMN, pa.array(values, pa.string()))


def effective_fingerprint(fingerprint: str, stored_hash: str | None) -> str:
    """What the shard builder compares for a route: the stat fingerprint, with the content hash when stored."""
    return fingerprint if stored_hash is None else f"{fingerprint}+{stored_hash}"


def route_hashes(data_root: Path, route_ids: list[str], copies: list[tuple[str, ...]]) -> list[str | None]:
    """`content_hash` of the first copy of each route (None if it cannot be opened or read); one pool task."""
    out: list[str | None] = []
    for rid, locators in zip(route_ids, copies):
        try:
            out.append(content_hash(open_store(data_root, locators[0]), rid))
        except (LeadFormatError, OSError):
            out.append(None)
    return out


def _hash_routes(
    data_root: Path, route_ids: list[str], copies: list[tuple[str, ...]], workers: int
) -> dict[str, str | None]:
    chunks = [
        (route_ids[i : i + POOL_CHUNK], copies[i : i + POOL_CHUNK])
        for i in range(0, len(route_ids), POOL_CHUNK)
    ]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(route_hashes, [data_root] * len(chunks), *zip(*chunks)))
    else:
        parts = [route_hashes(data_root, ids, c) for ids, c in chunks]
    return dict(zip(route_ids, (h for part in parts for h in part)))
