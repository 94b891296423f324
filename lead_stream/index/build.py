"""Raw LEAD routes → Parquet index: routes.parquet, frames.parquet/ and buckets/<collection>.parquet/ (parts).

`build_index` finds every route (`sources.discover_sources`: extracted folders below `data/`, zips anywhere
below the data root or below `IndexConfig.sources`, local or remote), reads results.json and every meta
pickle of each route (in worker processes, one Arrow table per route; zips in place), keeps the scalar meta
keys listed in `lead_stream.schemas.tables`, and writes under `<data_root>/index/`. Paths inside the tables
are relative (route_id; `source` relative to the data root unless remote), so the folder is portable. A
route found both extracted and zipped is one route, read from the folder once both copies are checked to
hold the same files.

Incremental, by route: a route whose stat stamp (folder: size + mtime of results.json and the mtime of the
route folder and of each modality folder, ~15 stats per route; zip: its size + mtime or ETag) equals the one
in the previous routes.parquet is not re-read; its rows, including its `Route.fingerprint()` (size + mtime
of every file), are kept, and so are its frame parts (`frame_store`). A folder's mtime changes whenever an
entry is added, removed or renamed; `check_files` also compares the fingerprint of every such route, which
sees files rewritten in place. routes.parquet is written LAST, so a killed build never pairs new
fingerprints with old frames. A route that cannot be read (a truncated zip, a bad CRC, copies that
differ, ...) is recorded (usable=false, read_error="<file>: <problem>") and the others complete;
`strict=True` raises.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead_stream.core.atomic import remove_stale_tmp
from lead_stream.core.errors import LeadFormatError
from lead_stream.core.layout import relative_path
from lead_stream.index.collections import collection_sizes, write_collections
from lead_stream.index.content import check_content, store_hashes, with_content_column
from lead_stream.index.frame_store import (
    FrameWriter,
    frames_path,
    frames_schema,
    num_frames,
    read_placement,
    write_placement,
)
from lead_stream.index.route_rows import read_route, route_fingerprints, route_stamp
from lead_stream.index.tables import index_dir, table_path, write_parquet
from lead_stream.schemas.tables import (
    BUILD_ID_KEY,
    ROUTES_SCHEMA,
    SchemaError,
    check_version,
    conform,
)
from lead_stream.sources.discovery import discover_sources

IN_FLIGHT_PER_WORKER = 4  # routes submitted ahead per worker (their tables are what the parent holds)
STAMP_POOL_MIN_ROUTES = 256  # below this many routes, stat stamps are computed in-process (no pool start-up)


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    # --- parallelism ---
    workers: int | None = None  # processes reading routes; None -> os.cpu_count(); 1 -> in-process
    # --- routes ---
    sources: tuple[str, ...] = ()  # more roots searched for zips: local folders or URLs (http(s), fsspec)
    # --- rebuild policy ---
    force: bool = False  # re-read every route, ignoring the previous index
    check_files: bool = (
        False  # also stat every file of unchanged-stamp routes (sees files rewritten in place)
    )
    verify_content: bool = False  # hash every file of every route; re-read those whose content changed
    strict: bool = False  # raise LeadFormatError on the first unreadable route instead of recording it
    # --- output ---
    progress: bool = True  # tqdm bar (routes/s) on stderr
    compression: str = "zstd"  # Parquet codec of the tables

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 or None, got {self.workers}")


@dataclass(frozen=True, kw_only=True)
class IndexSummary:
    """What one `build_index` run did."""

    index_dir: Path
    num_routes: int  # routes discovered
    num_usable_routes: int  # LEAD §2.3 rule and readable
    num_frames: int  # rows of frames.parquet
    num_reread: int  # routes read this run (the rest reused from the previous index)
    num_frames_read: int  # frames whose meta was read this run
    failures: tuple[tuple[str, str], ...]  # (route_id, "<file>: <problem>") of unreadable routes
    collections: Mapping[str, int] = field(default_factory=dict)  # collection -> member frames
    seconds: float = 0.0
    content_changed: tuple[str, ...] = ()  # verify_content: routes re-read because their content changed
    content_note: str = ""  # verify_content: what the content check found (index/content.py)

    @property
    def num_reused(self) -> int:
        return self.num_routes - self.num_reread

    @property
    def frames_per_s(self) -> float:
        return self.num_frames_read / self.seconds if self.seconds > 0 else 0.0

    def one_line(self) -> str:
        buckets = ", ".join(f"{name} {n:,}" for name, n in self.collections.items())
        line = (
            f"{self.num_routes:,} routes ({self.num_usable_routes:,} usable, {self.num_reread:,} read, "
            f"{self.num_reused:,} unchanged), {self.num_frames:,} frames; buckets: {buckets} "
            f"-> {self.index_dir} in {self.seconds:.1f}s"
        )
        if self.content_note:
            line += f"; {self.content_note}"
        if self.failures:
            line += f"; {len(self.failures)} unreadable: " + "; ".join(f"{m}" for _, m in self.failures[:3])
            if len(self.failures) > 3:
                line += " ..."
        return line


def _previous_routes(data_root: Path) -> tuple[pa.Table, dict[str, str]] | None:
    """(routes table, route_id → frames part) of the previous build, if it is complete and of
    this schema version (a single-file frames table from before parts gives an empty placement)."""
    routes_path, frames = table_path(data_root, "routes"), frames_path(data_root)
    if not routes_path.is_file() or not frames.exists():
        return None
    try:
        routes, frames_schema_ = pq.read_table(routes_path), frames_schema(data_root)
        check_version(routes.schema, "routes", routes_path)
        check_version(frames_schema_, "frames", frames)
    except (SchemaError, LeadFormatError, pa.ArrowInvalid, OSError):
        return None
    build = routes.schema.metadata.get(BUILD_ID_KEY)
    if frames.is_file():
        if build != frames_schema_.metadata.get(BUILD_ID_KEY):
            return None  # killed between writes: trust nothing
        placement: dict[str, str] = {}
    else:
        placement, placement_build = read_placement(data_root)
        if placement_build is None or placement_build.encode() != build:
            return None
    return with_content_column(routes).select(ROUTES_SCHEMA.names).cast(ROUTES_SCHEMA), placement


def build_index(data_root: Path, *, config: IndexConfig = IndexConfig()) -> IndexSummary:
    """Scan every route and write routes.parquet, frames.parquet and the bucket tables under index/.

    Nothing is written when no route changed (same stat stamps, same route set) and the default
    collections are on disk with their current definitions.

    Args:
        data_root: LEAD data root (`<data_root>/data/<Scenario>/<route>/`).
        config: workers, force, strict, progress.

    Returns:
        IndexSummary (counts, routes re-read, unreadable routes, collection sizes).

    Raises:
        LeadFormatError: no `data/` folder; with `strict`, the first unreadable route (by route_id).
    """
    started = time.perf_counter()
    data_root = Path(data_root)
    out_dir = index_dir(data_root)
    sources = discover_sources(data_root, extra_roots=config.sources)
    route_ids = list(sources)
    remove_stale_tmp(out_dir)
    previous = None if config.force else _previous_routes(data_root)
    old_routes, old_placement = previous or (ROUTES_SCHEMA.empty_table(), {})
    old_index = {rid: i for i, rid in enumerate(old_routes.column("route_id").to_pylist())}
    old_stamps = old_routes.column("stat_stamp").to_pylist()
    old_readable = pc.is_null(old_routes.column("read_error")).to_pylist()
    workers = config.workers or os.cpu_count() or 1

    copies = [tuple(sources[rid]) for rid in route_ids]
    if workers > 1 and len(route_ids) >= STAMP_POOL_MIN_ROUTES:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            stamps = dict(
                zip(route_ids, pool.map(route_stamp, [data_root] * len(copies), copies, chunksize=64))
            )
    else:
        stamps = {rid: route_stamp(data_root, c) for rid, c in zip(route_ids, copies)}
    reused = [
        rid
        for rid in route_ids
        if (i := old_index.get(rid)) is not None and old_stamps[i] == stamps[rid] and old_readable[i]
    ]  # unreadable routes are always read again
    if config.check_files and reused:
        old_fingerprints = old_routes.column("fingerprint").to_pylist()
        recorded = {rid: old_fingerprints[old_index[rid]] for rid in reused}
        reused = _same_fingerprints(data_root, reused, sources, recorded, workers)
    content = None
    if config.verify_content:
        stored = dict(zip(old_index, old_routes.column("content_hash").to_pylist()))
        content = check_content(data_root, reused, sources, stored, workers)
        reused = list(content.unchanged)
    reused_set = set(reused)
    to_read = [rid for rid in route_ids if rid not in reused_set]
    if not to_read and len(old_index) == len(route_ids):
        sizes = collection_sizes(data_root)
        if sizes is not None:  # nothing changed: the index on disk is current
            return IndexSummary(
                index_dir=out_dir,
                num_routes=len(route_ids),
                num_usable_routes=pc.sum(old_routes.column("usable")).as_py() or 0,
                num_frames=num_frames(data_root),
                num_reread=0,
                num_frames_read=0,
                failures=(),
                collections=sizes,
                seconds=time.perf_counter() - started,
                content_note=content.note() if content else "",
            )
    executor = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(to_read) > 1 else None
    writer = FrameWriter(data_root, config.compression)  # frames go to disk as they arrive
    try:
        results = _read_routes(
            data_root,
            to_read,
            sources,
            stamps,
            executor,
            config.progress,
            writer,
            IN_FLIGHT_PER_WORKER * workers,
        )
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)

    failures = [(rid, results[rid][1]) for rid in to_read if results[rid][1] is not None]
    if config.strict and failures:
        raise LeadFormatError(*failures[0][1])

    routes = _routes_table(old_routes, old_index, reused, to_read, results, route_ids)
    if content is not None:
        routes = store_hashes(routes, content.hashes)
    drop = set(old_index) - reused_set
    placement = writer.finish(data_root, old_placement if previous else {}, drop, reused)
    build_id = uuid.uuid4().hex
    write_placement(data_root, placement, build_id)
    collections = write_collections(data_root)  # only the frames parts written now are read
    write_parquet(
        conform(routes, "routes", metadata={BUILD_ID_KEY: build_id}),
        table_path(data_root, "routes"),
        config.compression,
    )  # last: its build id vouches for the frame parts' placement

    usable = pc.sum(routes.column("usable")).as_py() or 0
    return IndexSummary(
        index_dir=out_dir,
        num_routes=len(route_ids),
        num_usable_routes=usable,
        num_frames=num_frames(data_root),
        num_reread=len(to_read),
        num_frames_read=writer.num_rows,
        failures=tuple(
            (rid, f"{relative_path(path, data_root)}: {problem}") for rid, (path, problem) in failures
        ),
        collections=collections,
        seconds=time.perf_counter() - started,
        content_changed=content.changed if content else (),
        content_note=content.note() if content else "",
    )


def _routes_table(
    old_routes: pa.Table,
    old_index: Mapping[str, int],
    reused: list[str],
    to_read: list[str],
    results: Mapping[str, Any],
    route_ids: list[str],
) -> pa.Table:
    """routes.parquet in `route_ids` order: the kept rows of `reused` taken from the previous table (no
    per-row Python), then the rows read now."""
    kept = old_routes.take(pa.array([old_index[rid] for rid in reused], pa.int64()))
    new_rows = pa.Table.from_pylist([results[rid][0] for rid in to_read], schema=ROUTES_SCHEMA)
    table = pa.concat_tables([kept, new_rows])
    position = {rid: i for i, rid in enumerate(reused + to_read)}
    return table.take(pa.array([position[rid] for rid in route_ids], pa.int64()))


def _same_fingerprints(
    data_root: Path,
    route_ids: list[str],
    sources: Mapping[str, list[str]],
    recorded: Mapping[str, str],
    workers: int,
) -> list[str]:
    """The routes of `route_ids` whose fingerprint (every file's size + mtime_ns) equals the recorded one."""
    copies = [tuple(sources[rid]) for rid in route_ids]
    chunks = [(route_ids[i : i + 64], copies[i : i + 64]) for i in range(0, len(route_ids), 64)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(route_fingerprints, [data_root] * len(chunks), *zip(*chunks)))
    else:
        parts = [route_fingerprints(data_root, ids, c) for ids, c in chunks]
    found = [fp for part in parts for fp in part]
    return [rid for rid, fp in zip(route_ids, found) if fp == recorded[rid]]


def _read_routes(
    data_root: Path,
    route_ids: list[str],
    sources: Mapping[str, list[str]],
    stamps: Mapping[str, str],
    executor: ProcessPoolExecutor | None,
    progress: bool,
    writer: FrameWriter,
    in_flight: int = 1,
) -> dict[str, Any]:
    """Read `route_ids` (in `executor` if given) with a progress bar (routes/s); each route's frames go to
    `writer` at once, and at most `in_flight` routes are submitted ahead (the parent holds their tables).
    Returns route_id → (routes row, error or None)."""
    from tqdm import tqdm

    bar = tqdm(total=len(route_ids), unit="route", desc="index", disable=not progress, dynamic_ncols=True)
    results: dict[str, Any] = {}

    def keep(rid: str, result: tuple[dict[str, Any], pa.Table | None, Any]) -> None:
        row, frames, error = result
        if frames is not None:
            writer.add(frames)
        results[rid] = (row, error)
        bar.update(1)

    try:
        if executor is None:
            for rid in route_ids:
                keep(rid, read_route(data_root, rid, tuple(sources[rid]), stamps[rid]))
        else:  # a bounded window of routes in flight: a finished route's table is dropped once written
            queue = iter(route_ids)
            pending: dict[Future, str] = {}

            def submit() -> None:
                rid = next(queue, None)
                if rid is not None:
                    pending[executor.submit(read_route, data_root, rid, tuple(sources[rid]), stamps[rid])] = (
                        rid
                    )

            for _ in range(in_flight):
                submit()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    keep(pending.pop(future), future.result())
                    submit()
    finally:
        bar.close()
    return results
