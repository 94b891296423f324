"""Built routes → the manifest tables of a cache, written so that a change costs about what it changes.

Layout (manifest layout 2): `samples.parquet/` is a directory of Parquet parts (`part-<id>.parquet`, whole
routes, at most `PART_ROWS` samples each, sorted by key inside); `routes.parquet` (one row per route: its
index fingerprint, the digest of its selected frames, the part holding its samples), `shards.parquet` and
`failures.parquet` are small single files. `pl.read_parquet(cache_dir / "samples.parquet")` and
`pyarrow.parquet.read_table` read the directory as one table. An update rewrites only the parts that held
a changed or removed route (a part of at most `PART_ROWS` rows), adds the new rows as a new part (or
merged into the smallest part), and rewrites the per-route and per-shard tables (O(routes), no sample
rows). Every write is atomic; `manifest.json` is removed before and written after, so a directory holding
it always lists exactly its live parts. The old single-file `samples.parquet` (layout 1) is still read;
the next `shard` rebuilds the tables from the journal in layout 2 (and says so).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead_stream.cache import features
from lead_stream.cache.manifest import MANIFEST_FILENAME, TABLE_FILENAMES, read_manifest_info
from lead_stream.cache.tar_writer import JOURNAL_COLUMNS, load_journal, sample_key
from lead_stream.core.atomic import atomic_path, atomic_write_text
from lead_stream.core.errors import LeadFormatError
from lead_stream.core.parts import replace_parts, update_parts
from lead_stream.schemas.manifest import (
    MANIFEST_SCHEMAS,
    MANIFEST_TABLE_KEY,
    MANIFEST_VERSION,
    MANIFEST_VERSION_KEY,
    manifest_version_problem,
)

SAMPLES_LAYOUT = 2  # manifest.json "samples_layout": 2 = samples.parquet/ is a directory of parts
PART_ROWS = 1 << 16  # samples per part at most (a whole route may exceed it alone)


def _with_meta(table: pa.Table, name: str) -> pa.Table:
    meta = {MANIFEST_VERSION_KEY: str(MANIFEST_VERSION).encode(), MANIFEST_TABLE_KEY: name.encode()}
    return table.select(MANIFEST_SCHEMAS[name].names).cast(MANIFEST_SCHEMAS[name].with_metadata(meta))


def write_table(cache_dir: Path, name: str, table: pa.Table) -> None:
    """One manifest table (not samples) as its single file, atomically."""
    with atomic_path(Path(cache_dir) / TABLE_FILENAMES[name]) as tmp:
        pq.write_table(_with_meta(table, name), tmp, compression="zstd")


def samples_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / TABLE_FILENAMES["samples"]


def samples_of_entries(entries: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Shard journal entries (`tar_writer.journal_entry`: a shard row + its samples as columns) → samples rows,
    built column by column (no dict per sample)."""
    columns: dict[str, list] = {name: [] for name in MANIFEST_SCHEMAS["samples"].names}
    for entry in entries:
        shard, cols = entry["shard"], entry["columns"]
        n = len(cols["frame_idx"])
        for name in JOURNAL_COLUMNS:
            columns[name].extend(cols[name])
        columns["key"].extend(sample_key(shard["route_id"], f) for f in cols["frame_idx"])
        for name in ("route_id", "shard", "route_fingerprint"):
            columns[name].extend([shard[name]] * n)
    return pa.table(columns, schema=MANIFEST_SCHEMAS["samples"])


@dataclass(frozen=True)
class CacheState:
    """The manifest tables of a complete layout-2 cache (Arrow; no sample rows)."""

    routes: pa.Table  # ROUTES schema: route_id, route_fingerprint, frames_digest, part, num_samples
    shards: pa.Table
    failures: pa.Table
    info: dict[str, Any]


def read_state(cache_dir: Path) -> CacheState | None:
    """The per-route, per-shard and failure tables of a complete layout-2 cache; None otherwise (no
    manifest.json, layout 1, or a table unreadable: the caller then rebuilds from the journal)."""
    try:
        info = read_manifest_info(cache_dir)
    except (LeadFormatError, OSError):  # unreadable: rebuild from the journal
        return None
    if info.get("samples_layout") != SAMPLES_LAYOUT:
        return None
    tables = {}
    for name in ("routes", "shards", "failures"):
        try:
            table = pq.read_table(Path(cache_dir) / TABLE_FILENAMES[name])
        except (OSError, pa.ArrowInvalid):
            return None
        if manifest_version_problem(table.schema, name):
            return None
        tables[name] = table
    return CacheState(tables["routes"], tables["shards"], tables["failures"], info)


def _prepare_samples(table: pa.Table) -> pa.Table:
    return _with_meta(table.sort_by("key"), "samples")


def write_all_parts(cache_dir: Path, samples: pa.Table) -> dict[str, str]:
    """Replace every sample part (or a layout-1 file) by parts of `samples`; returns route_id → part."""
    directory = samples_dir(cache_dir)
    if directory.is_file():
        directory.unlink()  # layout 1: manifest.json is already gone, so nothing reads it meanwhile
    samples = samples.cast(MANIFEST_SCHEMAS["samples"])
    return replace_parts(directory, samples, max_rows=PART_ROWS, prepare=_prepare_samples)


def update_samples(cache_dir: Path, routes: pa.Table, drop: set[str], new_rows: pa.Table) -> dict[str, str]:
    """Rewrite only the parts holding a route of `drop`, add `new_rows`; returns the new route_id → part.

    Args:
        cache_dir: the cache directory.
        routes: the previous routes table (route_id, part).
        drop: route ids whose previous samples go (changed or removed routes).
        new_rows: samples of the routes built now.
    """
    placement = {
        rid: part
        for rid, part in zip(routes.column("route_id").to_pylist(), routes.column("part").to_pylist())
        if part
    }
    return update_parts(
        samples_dir(cache_dir),
        placement,
        drop,
        new_rows.cast(MANIFEST_SCHEMAS["samples"]),
        max_rows=PART_ROWS,
        prepare=_prepare_samples,
    )


def routes_table(plan: Iterable[Any], placement: Mapping[str, str], counts: Mapping[str, int]) -> pa.Table:
    """The per-route table of the planned routes (`chunks.RoutePlan`s) with their parts and sample counts."""
    plan = list(plan)
    return pa.table(
        {
            "route_id": [r.route_id for r in plan],
            "route_fingerprint": [r.fingerprint for r in plan],
            "frames_digest": [r.digest for r in plan],
            "part": [placement.get(r.route_id, "") for r in plan],
            "num_samples": [int(counts.get(r.route_id, 0)) for r in plan],
        },
        schema=MANIFEST_SCHEMAS["routes"],
    )


@dataclass(frozen=True)
class ManifestCounts:
    """What a written manifest holds."""

    num_samples: int
    num_shards: int
    num_failures: int


def code_version() -> str:
    from lead_stream import __version__

    return f"lead-stream {__version__}"


def write_manifest(cache_dir: Path, pid: str, identity: dict[str, Any], plan: list[Any]) -> ManifestCounts:
    """All manifest tables from the journal of every planned route (layout 2), then manifest.json LAST."""
    records, shard_entries = load_journal(cache_dir)
    entries, failures = [], []
    for route in plan:
        record = records[route.route_id]
        failures.extend(record["failures"])
        entries.extend(shard_entries[shard] for shard in record["shards"])
    if (cache_dir / TABLE_FILENAMES["samples"]).is_file():
        warnings.warn(
            f"{cache_dir}: migrating the manifest to layout 2 (samples.parquet/ as parts)", stacklevel=3
        )
    samples = samples_of_entries(entries)
    placement = write_all_parts(cache_dir, samples)
    counts = dict(
        zip(*np.unique(samples.column("route_id").to_numpy(zero_copy_only=False), return_counts=True))
    )
    shards = pa.Table.from_pylist([e["shard"] for e in entries], schema=MANIFEST_SCHEMAS["shards"])
    failures_table = pa.Table.from_pylist(failures, schema=MANIFEST_SCHEMAS["failures"])
    return _finish_manifest(cache_dir, pid, identity, plan, placement, counts, shards, failures_table)


def update_manifest(
    cache_dir: Path,
    pid: str,
    identity: dict[str, Any],
    plan: list[Any],
    state: CacheState,
    dropped: set[str],
    built_entries: list[dict[str, Any]],
    records: dict[str, dict],
) -> ManifestCounts:
    """The previous tables minus the `dropped` routes plus what was built now; only touched parts rewritten."""
    new_rows = samples_of_entries(built_entries)
    placement = update_samples(cache_dir, state.routes, dropped, new_rows)
    counts = {
        rid: n
        for rid, n in zip(
            state.routes.column("route_id").to_pylist(), state.routes.column("num_samples").to_pylist()
        )
        if rid not in dropped
    }
    counts.update(
        dict(zip(*np.unique(new_rows.column("route_id").to_numpy(zero_copy_only=False), return_counts=True)))
    )
    drop = pa.array(sorted(dropped), pa.string())

    def kept(table: pa.Table) -> pa.Table:
        return table.filter(pc.invert(pc.is_in(table.column("route_id"), drop)))

    shards = pa.concat_tables(
        [
            kept(state.shards).cast(MANIFEST_SCHEMAS["shards"]),
            pa.Table.from_pylist([e["shard"] for e in built_entries], schema=MANIFEST_SCHEMAS["shards"]),
        ]
    )
    new_failures = [f for r in records.values() if r["route_id"] in dropped for f in r["failures"]]
    failures = pa.concat_tables(
        [
            kept(state.failures).cast(MANIFEST_SCHEMAS["failures"]),
            pa.Table.from_pylist(new_failures, schema=MANIFEST_SCHEMAS["failures"]),
        ]
    )
    return _finish_manifest(cache_dir, pid, identity, plan, placement, counts, shards, failures)


def _finish_manifest(
    cache_dir: Path,
    pid: str,
    identity: dict[str, Any],
    plan: list[Any],
    placement: dict[str, str],
    counts: dict[str, int],
    shards: pa.Table,
    failures: pa.Table,
) -> ManifestCounts:
    shards = shards.sort_by("shard")
    failures = failures.sort_by([("route_id", "ascending"), ("frame_idx", "ascending")])
    write_table(cache_dir, "shards", shards)
    write_table(cache_dir, "failures", failures)
    write_table(cache_dir, "routes", routes_table(plan, placement, counts))
    num_samples = int(sum(counts.values()))
    info = {
        "manifest_version": MANIFEST_VERSION,
        "samples_layout": SAMPLES_LAYOUT,
        "pipeline_id": pid,
        "config": identity["config"],
        "packing": identity.get("packing"),
        "preprocess_version": identity["preprocess_version"],
        "preprocessing_sha256": identity["preprocessing_sha256"],
        "code_version": code_version(),
        "members": list(features.MEMBER_NAMES),
        "num_samples": num_samples,
        "num_shards": shards.num_rows,
        "num_failures": failures.num_rows,
        "num_routes": len(plan),
        "size_bytes": int(pc.sum(shards.column("size_bytes")).as_py() or 0),
        "tables": TABLE_FILENAMES,
        "inputs": identity.get(
            "inputs"
        ),  # the index files' (size, mtime_ns) it was planned from (`unchanged.input_stamps`)
    }
    atomic_write_text(cache_dir / MANIFEST_FILENAME, json.dumps(info, indent=1, sort_keys=True))
    return ManifestCounts(num_samples, shards.num_rows, failures.num_rows)
