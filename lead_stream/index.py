"""Raw LEAD routes → Parquet index: routes.parquet, frames.parquet and buckets/<collection>.parquet.

`build_index` reads results.json and every meta pickle of each route (in worker processes, one Arrow
table per route), keeps the scalar meta keys listed in `lead_stream.schemas.tables`, and writes under
`<data_root>/index/`. Paths inside the tables are relative (route_id), so the folder is portable.

Incremental: a route whose stat stamp (size + mtime of results.json and of every metas/ and bboxes/ file,
mtime of each sensor folder) equals the one in the previous routes.parquet is not re-read; its rows,
including its `Route.fingerprint()`, are copied from the previous tables. (A folder's mtime changes whenever
an entry is added, removed or renamed, so the stamp sees every change the fingerprint sees, at ~1/4 of its
cost.) routes.parquet is
written LAST, so a killed build never pairs new fingerprints with old frames. A route that cannot be read
is recorded (usable=false, read_error="<file>: <problem>") and the others complete; `strict=True` raises.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead_stream import layout
from lead_stream.atomic import atomic_path, list_finished, remove_stale_tmp
from lead_stream.buckets import BucketCollection, default_collections
from lead_stream.constants import RESULT_INFRACTION_KEYS
from lead_stream.errors import ConfigError, LeadFormatError
from lead_stream.schemas.tables import (
    BUILD_ID_KEY,
    FRAMES_SCHEMA,
    INFRACTION_COLUMNS,
    META_COLUMNS,
    MODALITIES,
    ROUTES_SCHEMA,
    SCHEMA_VERSION,
    SchemaError,
    check_version,
    conform,
)
from lead_stream.sources import Route, discover_routes, read_lzma_pickle, route_usability

INDEX_DIR = "index"
BUCKETS_DIR = "buckets"
COLLECTION_KEY = b"lead_stream.collection"
LEAD_NAME_KEY = b"lead_stream.lead_name"
PARAMS_KEY = b"lead_stream.params"
DEFINITION_KEY = b"lead_stream.definition"
_FRAME_FILE_RE = re.compile(r"^(\d{4,})\.[^.]+$")
_TOWN_RE = re.compile(r"^(Town\d+\w*?)_")
STAMP_POOL_MIN_ROUTES = 256   # below this many routes, stat stamps are computed in-process (no pool start-up)


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    # --- parallelism ---
    workers: int | None = None   # processes reading routes; None -> os.cpu_count(); 1 -> in-process
    # --- rebuild policy ---
    force: bool = False          # re-read every route, ignoring the previous index
    strict: bool = False         # raise LeadFormatError on the first unreadable route instead of recording it
    # --- output ---
    progress: bool = True        # tqdm bar (frames/s) on stderr
    compression: str = "zstd"    # Parquet codec of the tables

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 or None, got {self.workers}")


@dataclass(frozen=True, kw_only=True)
class IndexSummary:
    """What one `build_index` run did."""

    index_dir: Path
    num_routes: int                          # routes discovered
    num_usable_routes: int                   # LEAD §2.3 rule and readable
    num_frames: int                          # rows of frames.parquet
    num_reread: int                          # routes read this run (the rest reused from the previous index)
    num_frames_read: int                     # frames whose meta was read this run
    failures: tuple[tuple[str, str], ...]    # (route_id, "<file>: <problem>") of unreadable routes
    collections: Mapping[str, int] = field(default_factory=dict)   # collection -> member frames
    seconds: float = 0.0

    @property
    def num_reused(self) -> int:
        return self.num_routes - self.num_reread

    @property
    def frames_per_s(self) -> float:
        return self.num_frames_read / self.seconds if self.seconds > 0 else 0.0

    def one_line(self) -> str:
        buckets = ", ".join(f"{name} {n:,}" for name, n in self.collections.items())
        line = (f"{self.num_routes:,} routes ({self.num_usable_routes:,} usable, {self.num_reread:,} read, "
                f"{self.num_reused:,} unchanged), {self.num_frames:,} frames; buckets: {buckets} "
                f"-> {self.index_dir} in {self.seconds:.1f}s")
        if self.failures:
            line += f"; {len(self.failures)} unreadable: " + "; ".join(f"{m}" for _, m in self.failures[:3])
            if len(self.failures) > 3:
                line += " ..."
        return line


# ---------------------------------------------------------------------------------------------------
# paths and readers


def index_dir(data_root: Path) -> Path:
    """`<data_root>/index`."""
    return Path(data_root) / INDEX_DIR


def table_path(data_root: Path, name: str) -> Path:
    """Path of index table `name`: "routes", "frames", or a bucket collection name."""
    if name in ("routes", "frames"):
        return index_dir(data_root) / f"{name}.parquet"
    return index_dir(data_root) / BUCKETS_DIR / f"{name}.parquet"


def _read_checked(path: Path, name: str) -> pa.Table:
    if not path.is_file():
        raise LeadFormatError(path, f"missing (build the index first: "
                                    f"lead-stream index {path.parent.parent})")
    table = pq.read_table(path)
    try:
        check_version(table.schema, name, path)
    except SchemaError as error:
        raise LeadFormatError(path, str(error).split(": ", 1)[-1]) from None
    return table


def read_bucket_members(data_root: Path, collection: str) -> pl.DataFrame:
    """Members (route_id, frame_idx, bucket, rate) of bucket collection `collection`.

    Raises:
        LeadFormatError: the file is missing or not a bucket table of this schema version.
    """
    return pl.from_arrow(_read_checked(table_path(data_root, collection), "bucket_members"))


def collection_names(data_root: Path) -> list[str]:
    """Names of the bucket collections written under index/buckets/."""
    return [p.stem for p in list_finished(index_dir(data_root) / BUCKETS_DIR, "*.parquet")]


# ---------------------------------------------------------------------------------------------------
# one route -> (route row, frames table)


def _frames_on_disk(folder: Path) -> set[int]:
    """Frame numbers of the `NNNN.ext` files in `folder` (empty if it does not exist)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {int(m.group(1)) for m in map(_FRAME_FILE_RE.match, names) if m}


def _convert(value: Any, kind: pa.DataType) -> Any:
    """Python value of one meta entry for an Arrow column of `kind` (slow path, exact errors)."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if pa.types.is_string(kind):
        if isinstance(value, (list, tuple)) and len(value) <= 1:   # vehicle_door_side can be ["left"]
            return _convert(value[0], kind) if value else None
        if isinstance(value, (str, int, float)):
            return str(value)
    elif pa.types.is_boolean(kind):
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
    elif pa.types.is_integer(kind):
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, (int, float)) and float(value).is_integer():
            return int(value)
    elif isinstance(value, (int, float)):
        return float(value) if np.isfinite(value) else None
    raise TypeError(f"expected {kind}, found {type(value).__name__} {value!r:.60}")


def _column(values: list[Any], kind: pa.DataType, key: str, metas_dir: Path) -> pa.Array:
    try:
        array = pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        converted = []
        for frame_idx, value in enumerate(values):
            try:
                converted.append(_convert(value, kind))
            except TypeError as error:
                raise LeadFormatError(metas_dir / f"{frame_idx:04d}.pkl",
                                      f"key {key!r}: {error} (frames schema v{SCHEMA_VERSION})") from None
        array = pa.array(converted, type=kind)
    if pa.types.is_floating(kind) and array.null_count < len(array):
        array = pc.if_else(pc.is_finite(array), array, pa.scalar(None, kind))   # inf/nan -> null
    return array


def _results_row(results: Mapping[str, Any] | None, path: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"status": None, "score_composed": None, "score_route": None, "score_penalty": None,
                           "num_infractions": None, "route_length_m": None, "duration_game_s": None}
    row.update({name: None for name in INFRACTION_COLUMNS})
    if results is None:
        return row
    try:
        scores = results.get("scores") or {}
        meta = results.get("meta") or {}
        infractions = results.get("infractions") or {}
        row.update(status=results.get("status"), score_composed=scores.get("score_composed"),
                   score_route=scores.get("score_route"), score_penalty=scores.get("score_penalty"),
                   num_infractions=results.get("num_infractions"), route_length_m=meta.get("route_length"),
                   duration_game_s=meta.get("duration_game"))
        for key, name in zip(RESULT_INFRACTION_KEYS, INFRACTION_COLUMNS):
            row[name] = len(infractions.get(key) or ())
    except (AttributeError, TypeError) as error:
        raise LeadFormatError(path, f"unexpected results.json structure: {error}") from None
    return row


def _relative(path: Path, data_root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(data_root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _read_route(data_root: Path, route_id: str, stat_stamp: str
                ) -> tuple[dict[str, Any], pa.Table | None, tuple[str, str] | None]:
    """Read one route: its routes row, its frames table (None if unreadable) and the error (path, problem)."""
    route = Route(data_root, route_id)
    route_dir = Path(route.path)
    fingerprint = route.fingerprint()   # before reading: a change made during the read shows up next time
    present = {m: _frames_on_disk(route_dir / m) for m in MODALITIES}
    row: dict[str, Any] = {
        "route_id": route_id, "scenario": route.scenario,
        "fingerprint": fingerprint, "stat_stamp": stat_stamp,
        "num_frames": 0, "num_metas": len(present["metas"]), "has_results": False, "has_meta0": False,
        "read_error": None, **{f"has_{m}": (route_dir / m).is_dir() for m in MODALITIES},
    }
    town_match = _TOWN_RE.match(route_dir.name)
    row["town"] = town_match.group(1) if town_match else None
    row.update(_results_row(None, route_dir))
    try:
        results = route.results()
        row["has_results"] = results is not None
        row.update(_results_row(results, route_dir / "results.json"))
        has_meta0 = route.has_meta0()
        num_frames = route.num_frames()
        row.update(has_meta0=has_meta0, num_frames=num_frames)
        usable, reason = route_usability(results, has_meta0)
        row.update(usable=usable, reason=reason)
        frames = _frames_table(route, num_frames, usable, present)
    except LeadFormatError as error:
        problem = f"{_relative(error.path, data_root)}: {error.problem}"
        row.update(usable=False, reason=f"unreadable: {problem}", read_error=problem)
        return row, None, (str(error.path), error.problem)
    if frames.num_rows and frames.column("town").null_count < frames.num_rows:
        row["town"] = next(t for t in frames.column("town").to_pylist() if t is not None)
    return row, frames, None


def _frames_table(route: Route, num_frames: int, usable: bool, present: Mapping[str, set[int]]) -> pa.Table:
    """One row per frame of `route`: position, usability, scalar meta columns, has_<modality> flags."""
    idx = np.arange(num_frames, dtype=np.int32)
    metas = present["metas"]
    keys = [c.key for c in META_COLUMNS]
    rows: list[list[Any]] = []
    if metas:   # a route without any meta (unfinished) keeps null meta columns
        metas_dir = Path(route.path) / "metas"
        missing = sorted(set(range(num_frames)) - metas)
        if missing:
            raise LeadFormatError(metas_dir / f"{missing[0]:04d}.pkl",
                                  f"missing ({len(missing)} of {num_frames} metas absent; "
                                  "bboxes/ defines the frames)")
        prefix = f"{metas_dir}{os.sep}"
        for frame_idx in range(num_frames):   # the hot loop: one lzma pickle, then ~100 dict lookups
            meta = read_lzma_pickle(f"{prefix}{frame_idx:04d}.pkl")
            if not isinstance(meta, dict):
                raise LeadFormatError(metas_dir / f"{frame_idx:04d}.pkl",
                                      f"expected a dict of measurements, found {type(meta).__name__}")
            get = meta.get
            rows.append([get(key) for key in keys])
    values = list(zip(*rows)) if rows else []
    arrays: dict[str, Any] = {
        "route_id": pa.array([route.route_id] * num_frames, pa.string()),
        "scenario": pa.array([route.scenario] * num_frames, pa.string()),
        "frame_idx": idx, "num_frames": np.full(num_frames, num_frames, np.int32),
        "frames_from_start": idx, "frames_to_end": (num_frames - 1 - idx).astype(np.int32),
        "usable": np.full(num_frames, usable, np.bool_),
    }
    for i, c in enumerate(META_COLUMNS):
        if rows:
            arrays[c.column] = _column(list(values[i]), c.type, c.key, Path(route.path) / "metas")
        else:
            arrays[c.column] = pa.nulls(num_frames, c.type)
    for m in MODALITIES:
        arrays[f"has_{m}"] = np.isin(idx, np.fromiter(present[m], np.int64, len(present[m])))
    return conform(pa.table(arrays), "frames")


def _stat_stamp(route_dir: str) -> str:
    """Cheap hash of a route's stats: results.json, each metas/ and bboxes/ file, each sensor folder mtime."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        st = os.stat(f"{route_dir}/results.json")
        digest.update(b"%d:%d;" % (st.st_size, st.st_mtime_ns))
    except FileNotFoundError:
        digest.update(b"-;")
    for name in ("metas", "bboxes"):
        try:
            with os.scandir(f"{route_dir}/{name}") as entries:
                rows = sorted(f"{e.name}:{st.st_size}:{st.st_mtime_ns}" for e in entries for st in (e.stat(),))
            digest.update("|".join(rows).encode())
            digest.update(b";")
        except (FileNotFoundError, NotADirectoryError):
            digest.update(b"-;")
    for name in MODALITIES:
        if name not in ("metas", "bboxes"):
            try:
                digest.update(b"%d;" % os.stat(f"{route_dir}/{name}").st_mtime_ns)
            except (FileNotFoundError, NotADirectoryError):
                digest.update(b"-;")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# writing


def _write_parquet(table: pa.Table, path: Path, compression: str) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression)


def write_bucket_collection(data_root: Path, collection: BucketCollection, *,
                            frames: pl.LazyFrame | None = None, compression: str = "zstd") -> Path:
    """Evaluate `collection` over frames.parquet and write `index/buckets/<name>.parquet` atomically.

    Args:
        data_root: LEAD data root with a built index.
        collection: the collection (its definition is stored in the file's metadata).
        frames: frames table to use instead of reading index/frames.parquet.
        compression: Parquet codec.

    Returns:
        The written path.

    Raises:
        LeadFormatError: no frames table.
        ConfigError: an expression names an unknown column or does not evaluate.
    """
    if frames is None:
        frames = pl.from_arrow(_read_checked(table_path(data_root, "frames"), "frames")).lazy()
    try:
        members = collection.members(frames).collect()
    except pl.exceptions.PolarsError as error:
        raise ConfigError(f"collection {collection.name!r}: {str(error).strip().splitlines()[0]}") from None
    table = conform(members.to_arrow(), "bucket_members", metadata={
        COLLECTION_KEY: collection.name, LEAD_NAME_KEY: collection.lead_name or "",
        PARAMS_KEY: json.dumps(dict(collection.params), sort_keys=True),
        DEFINITION_KEY: collection.definition_json(),
    })
    path = table_path(data_root, collection.name)
    _write_parquet(table, path, compression)
    return path


def read_collection(data_root: Path, name: str) -> BucketCollection:
    """The definition stored in `index/buckets/<name>.parquet`."""
    path = table_path(data_root, name)
    meta = pq.read_schema(path).metadata or {}
    if DEFINITION_KEY not in meta:
        raise LeadFormatError(path, "no stored collection definition")
    return BucketCollection.from_definition(json.loads(meta[DEFINITION_KEY]))


def _previous_routes(data_root: Path) -> dict[str, dict[str, Any]] | None:
    """Route rows (by route_id) of the previous build, if it is complete and of this schema version."""
    routes_path, frames_path = table_path(data_root, "routes"), table_path(data_root, "frames")
    if not (routes_path.is_file() and frames_path.is_file()):
        return None
    try:
        routes, frames_schema = pq.read_table(routes_path), pq.read_schema(frames_path)
        check_version(routes.schema, "routes", routes_path)
        check_version(frames_schema, "frames", frames_path)
    except (SchemaError, pa.ArrowInvalid, OSError):
        return None
    if routes.schema.metadata.get(BUILD_ID_KEY) != frames_schema.metadata.get(BUILD_ID_KEY):
        return None   # killed between writes: trust nothing
    return {row["route_id"]: row for row in routes.to_pylist()}


def _stored_definition(data_root: Path, name: str) -> str | None:
    try:
        return (pq.read_schema(table_path(data_root, name)).metadata or {}).get(DEFINITION_KEY, b"").decode()
    except (OSError, pa.ArrowInvalid):
        return None


def _collection_sizes(data_root: Path) -> dict[str, int] | None:
    """Rows per collection file if every default collection is on disk with its current definition."""
    for collection in default_collections():
        if _stored_definition(data_root, collection.name) != collection.definition_json():
            return None
    return {name: pq.read_metadata(table_path(data_root, name)).num_rows
            for name in collection_names(data_root)}


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
    route_ids = discover_routes(data_root)
    remove_stale_tmp(out_dir)
    old_rows = (None if config.force else _previous_routes(data_root)) or {}
    workers = config.workers or os.cpu_count() or 1

    route_dirs = [str(layout.route_path(data_root, rid)) for rid in route_ids]
    if workers > 1 and len(route_ids) >= STAMP_POOL_MIN_ROUTES:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            stamps = dict(zip(route_ids, pool.map(_stat_stamp, route_dirs, chunksize=64)))
    else:
        stamps = dict(zip(route_ids, map(_stat_stamp, route_dirs)))
    reused = [rid for rid in route_ids if rid in old_rows and old_rows[rid]["stat_stamp"] == stamps[rid]
              and old_rows[rid]["read_error"] is None]   # unreadable routes are always read again
    reused_set = set(reused)
    to_read = [rid for rid in route_ids if rid not in reused_set]
    if not to_read and len(old_rows) == len(route_ids):
        sizes = _collection_sizes(data_root)
        if sizes is not None:   # nothing changed: the index on disk is current
            return IndexSummary(
                index_dir=out_dir, num_routes=len(route_ids),
                num_usable_routes=sum(bool(old_rows[rid]["usable"]) for rid in route_ids),
                num_frames=pq.read_metadata(table_path(data_root, "frames")).num_rows, num_reread=0,
                num_frames_read=0, failures=(), collections=sizes, seconds=time.perf_counter() - started)
    executor = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(to_read) > 1 else None
    try:
        results = _read_routes(data_root, to_read, stamps, executor, config.progress)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)

    failures = [(rid, results[rid][2]) for rid in to_read if results[rid][2] is not None]
    if config.strict and failures:
        raise LeadFormatError(*failures[0][1])

    route_rows = {rid: old_rows[rid] for rid in reused}
    route_rows.update({rid: results[rid][0] for rid in to_read})
    frame_parts = [results[rid][1] for rid in to_read if results[rid][1] is not None]
    if reused:
        old_frames = pq.read_table(table_path(data_root, "frames"),
                                   filters=[("route_id", "in", reused)])
        frame_parts.append(conform(old_frames, "frames"))
    frames = (pa.concat_tables(frame_parts) if frame_parts else FRAMES_SCHEMA.empty_table())
    frames = frames.sort_by([("route_id", "ascending"), ("frame_idx", "ascending")])
    routes = pa.Table.from_pylist([route_rows[rid] for rid in route_ids], schema=ROUTES_SCHEMA)

    build = {BUILD_ID_KEY: uuid.uuid4().hex}
    frames = conform(frames, "frames", metadata=build)
    _write_parquet(frames, table_path(data_root, "frames"), config.compression)
    collections = _write_collections(data_root, pl.from_arrow(frames).lazy(), config.compression)
    _write_parquet(conform(routes, "routes", metadata=build), table_path(data_root, "routes"),
                   config.compression)   # last: its build id vouches for frames.parquet

    usable = pc.sum(routes.column("usable")).as_py() or 0
    return IndexSummary(
        index_dir=out_dir, num_routes=len(route_ids), num_usable_routes=usable, num_frames=frames.num_rows,
        num_reread=len(to_read),
        num_frames_read=sum(results[rid][1].num_rows for rid in to_read if results[rid][1] is not None),
        failures=tuple((rid, f"{_relative(Path(path), data_root)}: {problem}")
                       for rid, (path, problem) in failures),
        collections=collections, seconds=time.perf_counter() - started,
    )


def _read_routes(data_root: Path, route_ids: list[str], stamps: Mapping[str, str],
                 executor: ProcessPoolExecutor | None, progress: bool) -> dict[str, Any]:
    """Read `route_ids` (in `executor` if given) with a frames/s progress bar; returns route_id -> result."""
    from tqdm import tqdm

    total = sum(Route(data_root, rid).num_frames() for rid in route_ids) if progress else None
    bar = tqdm(total=total, unit="frame", desc="index", disable=not progress, dynamic_ncols=True)
    results: dict[str, Any] = {}
    try:
        if executor is None:
            for rid in route_ids:
                results[rid] = _read_route(data_root, rid, stamps[rid])
                bar.update(results[rid][0]["num_frames"])
        else:
            futures = {executor.submit(_read_route, data_root, rid, stamps[rid]): rid for rid in route_ids}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(results[futures[future]][0]["num_frames"])
    finally:
        bar.close()
    return results


def _write_collections(data_root: Path, frames: pl.LazyFrame, compression: str) -> dict[str, int]:
    """Write the default collections and re-derive every user collection already in index/buckets/."""
    collections = {c.name: c for c in default_collections()}
    for name in collection_names(data_root):
        if name in collections:
            continue
        try:
            collections[name] = read_collection(data_root, name)
        except (LeadFormatError, ValueError, pl.exceptions.PolarsError) as error:
            warnings.warn(f"{table_path(data_root, name)}: cannot re-derive collection ({error}); left as is",
                          stacklevel=2)
    sizes = {}
    for name, collection in collections.items():
        path = write_bucket_collection(data_root, collection, frames=frames, compression=compression)
        sizes[name] = pq.read_metadata(path).num_rows
    return sizes
