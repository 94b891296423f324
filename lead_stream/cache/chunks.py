"""Index bucket tables → the per-route build plan, and one chunk of a route → tmp tar shards (in a worker).

`build_plan` lists every route with its selected frames (the union of the collections' members);
`build_chunk` preprocesses a chunk's frames (`features.build_sample`) into `*.tar.tmp` shards split at
`max_shard_bytes`, recording a failure row for each frame that cannot be built.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lead_stream.cache import features
from lead_stream.cache.frame import load_frame
from lead_stream.cache.manifest import sample_sha256
from lead_stream.cache.tar_writer import TarShardWriter, member_name_problem, route_hash, sample_key
from lead_stream.core import container, parquet
from lead_stream.core.errors import LeadFormatError
from lead_stream.core.layout import relative_path
from lead_stream.index.bucket_store import bucket_files
from lead_stream.index.content import CONTENT_COLUMN, effective_fingerprint
from lead_stream.index.tables import table_path
from lead_stream.sources.route import Route

BUILD_TMP_PREFIX = "building-rank"  # "<prefix>-<rank>-<route hash>-<chunk>-<part>.tar.tmp"


@dataclass(frozen=True, eq=False)
class RoutePlan:
    route_id: str
    fingerprint: str
    frame_array: np.ndarray  # (F,) int32 selected frame numbers, ascending (a view into the plan's array)
    digest: str = ""  # `frames_digest(frames)`: what the cache's routes table compares

    @property
    def frames(self) -> tuple[int, ...]:
        """The selected frame numbers as Python ints (made on use: only routes that are built need them)."""
        return tuple(self.frame_array.tolist())


def frames_digest(frames: np.ndarray) -> str:
    """blake2b (16 hex chars) of a route's selected frame numbers (int32, ascending)."""
    return hashlib.blake2b(np.ascontiguousarray(frames, dtype="<i4").tobytes(), digest_size=8).hexdigest()


_FRAME_OFFSET = 1 << 31  # int32 frame + offset fits the low 32 bits of a key, order kept


def _bucket_frame_keys(data_root: Path, collection: str, route_ids: pa.Array) -> np.ndarray:
    """The (route code << 32 | frame) int64 keys of a collection's members, route codes indexing the sorted
    `route_ids` of routes.parquet. Only route_id (dictionary coded: one string per route, not per frame) and
    frame_idx are read.

    Raises:
        LeadFormatError: the table is missing or of another version, or names a route routes.parquet lacks.
    """
    repair = f"rebuild it: lead-stream index {data_root}"
    columns = []
    for path in bucket_files(data_root, collection):  # its parts (or its one file from before parts)
        table = parquet.read_table(
            path, columns=["route_id", "frame_idx"], read_dictionary=["route_id"], repair=repair
        )
        columns += zip(table.column("route_id").chunks, table.column("frame_idx").chunks, strict=True)
    parts = []
    for routes, frames in columns:
        if not pa.types.is_dictionary(routes.type):
            routes = routes.dictionary_encode()
        codes = pc.index_in(routes.dictionary, value_set=route_ids)
        if codes.null_count:
            unknown = routes.dictionary.filter(pc.is_null(codes))[0].as_py()
            routes_file = table_path(data_root, "routes")
            raise LeadFormatError(
                routes_file, f"bucket route {unknown!r} is not in routes.parquet (stale index)"
            )
        row_codes = codes.to_numpy().astype(np.int64)[routes.indices.to_numpy()]
        parts.append((row_codes << 32) | (frames.to_numpy().astype(np.int64) + _FRAME_OFFSET))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def build_plan(data_root: Path, collections: tuple[str, ...]) -> list[RoutePlan]:
    """Routes (sorted) with their selected frames: the union of the collections' bucket members.

    Vectorised and small: each member is one int64 key (route code, frame), the union is one sort of the
    keys, route boundaries are found with numpy, then one digest per route; memory is ~16 bytes per
    member plus the routes table.

    Raises:
        LeadFormatError: missing index tables, or a bucket route missing from routes.parquet.
    """
    routes_file = table_path(data_root, "routes")
    if not routes_file.is_file():
        raise LeadFormatError(routes_file, "missing (build the index first: lead-stream index)")
    repair = f"rebuild it: lead-stream index {data_root}"
    hashed = CONTENT_COLUMN in parquet.read_schema(routes_file, repair=repair).names
    columns = ["route_id", "fingerprint", *([CONTENT_COLUMN] if hashed else [])]
    routes = pl.from_arrow(parquet.read_table(routes_file, columns=columns, repair=repair)).sort("route_id")
    if hashed:  # a stored content hash (index --verify-content) is part of what the cache compares
        fingerprints = list(map(effective_fingerprint, routes["fingerprint"], routes[CONTENT_COLUMN]))
        routes = routes.with_columns(pl.Series("fingerprint", fingerprints, dtype=pl.String))
    routes = routes.select("route_id", "fingerprint")
    route_ids = routes["route_id"].to_arrow()
    keys = np.concatenate([_bucket_frame_keys(data_root, name, route_ids) for name in collections])
    keys.sort()  # the union: sorted, then duplicates (a frame in several collections) dropped
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    codes = keys >> 32
    frames = ((keys & 0xFFFFFFFF) - _FRAME_OFFSET).astype(np.int32)
    del keys
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.int64)
    present = routes[codes[starts]]
    safe = present["route_id"].str.replace_all(".", "_", literal=True)
    if safe.n_unique() != len(safe):
        dup = safe.filter(safe.is_duplicated())[0]
        pair = present["route_id"].filter(safe == dup).to_list()
        raise LeadFormatError(routes_file, f"routes {pair[0]!r} and {pair[1]!r} give the same sample keys")
    bounds = np.r_[starts, len(frames)]
    plan = []
    for i, (route_id, fingerprint) in enumerate(present.iter_rows()):
        chunk = frames[bounds[i] : bounds[i + 1]]
        plan.append(RoutePlan(route_id, fingerprint, chunk, frames_digest(chunk)))
    return plan


def recorded_source(data_root: Path, route_id: str) -> str | None:
    """The copy of `route_id` the index read (routes.parquet `source`: a folder or `<zip>!<prefix>`)."""
    path = table_path(data_root, "routes")
    return _recorded_sources(str(path), path.stat().st_mtime_ns).get(route_id)


@functools.lru_cache(maxsize=4)
def _recorded_sources(routes_file: str, mtime_ns: int) -> dict[str, str]:
    table = parquet.read_table(
        Path(routes_file), columns=["route_id", "source"], repair="rerun `lead-stream index` to rebuild it"
    )
    return dict(zip(table.column("route_id").to_pylist(), table.column("source").to_pylist()))


def routes_of_rank(plan: list[RoutePlan], rank: int, world_size: int) -> list[RoutePlan]:
    """Round-robin over the sorted route ids: route i belongs to rank i % world_size."""
    return [route for i, route in enumerate(plan) if i % world_size == rank]


@dataclass(frozen=True)
class ChunkTask:
    data_root: Path
    cache_dir: Path
    route_id: str
    chunk_idx: int
    frames: tuple[int, ...]
    max_shard_bytes: int
    rank: int
    strict: bool


@dataclass
class TmpShard:
    tmp_path: Path
    samples: list[dict[str, Any]]  # manifest rows without "shard" and "route_fingerprint"
    size_bytes: int
    sha256: str


@dataclass
class ChunkResult:
    route_id: str
    chunk_idx: int
    shards: list[TmpShard]
    failures: list[dict[str, Any]]
    num_samples: int
    size_bytes: int


def build_chunk(task: ChunkTask) -> ChunkResult:
    """Build the samples of `task.frames` of one route into tmp tar files (split at max_shard_bytes)."""

    route = Route(task.data_root, task.route_id, source=recorded_source(task.data_root, task.route_id))
    shards: list[TmpShard] = []
    failures: list[dict[str, Any]] = []
    writer: TarShardWriter | None = None
    rows: list[dict[str, Any]] = []
    stem = f"{BUILD_TMP_PREFIX}-{task.rank}-{route_hash(task.route_id)}-{task.chunk_idx:06d}"

    def finish() -> None:
        nonlocal writer, rows
        if writer is not None:
            digest = writer.close()
            shards.append(TmpShard(writer.path, rows, writer.size_bytes, digest))
            writer, rows = None, []

    longest = max(features.MEMBER_NAMES, key=lambda name: len(name.encode()))
    try:
        for frame_idx in task.frames:
            try:
                problem = member_name_problem(sample_key(task.route_id, frame_idx), longest)
                if problem is not None:  # a route name no tar header can hold: every frame is a failure row
                    raise LeadFormatError(route.path, problem)
                members = features.build_sample(load_frame(route, frame_idx))
            except LeadFormatError as error:
                failures.append(
                    {
                        "route_id": task.route_id,
                        "frame_idx": frame_idx,
                        "file": relative_path(error.path, task.data_root),
                        "reason": error.problem,
                    }
                )
                if task.strict:
                    break
                continue
            if writer is None:
                writer = TarShardWriter(task.cache_dir / f"{stem}-{len(shards):04d}.tar.tmp")
            key = sample_key(task.route_id, frame_idx)
            offset, size = writer.add_sample(key, members)
            targets = container.decode_attrs(members["arrays.lz4"], features.TARGETS_GROUP)
            rows.append(
                {
                    "key": key,
                    "route_id": task.route_id,
                    "frame_idx": frame_idx,
                    "offset": offset,
                    "size_bytes": size,
                    "sha256": sample_sha256(members),
                    "planning_valid": bool(targets["planning_valid"]),
                }
            )
            if writer.size_bytes >= task.max_shard_bytes:
                finish()
        finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        for shard in shards:
            shard.tmp_path.unlink(missing_ok=True)
        raise
    return ChunkResult(
        task.route_id,
        task.chunk_idx,
        shards,
        failures,
        sum(len(s.samples) for s in shards),
        sum(s.size_bytes for s in shards),
    )


def route_chunks(route: RoutePlan, max_samples: int) -> list[tuple[int, ...]]:
    return [route.frames[i : i + max_samples] for i in range(0, len(route.frames), max_samples)]
