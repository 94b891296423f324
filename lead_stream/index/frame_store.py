"""Per-route frames tables → `index/frames.parquet/`, a directory of parts updated in proportion to the change.

`frames.parquet/part-<id>.parquet` hold whole routes (at most `FRAMES_PART_ROWS` rows each, sorted by
route_id, frame_idx; `core.parts`), and `index/frame_parts.parquet` records which part holds each route
(with the build id that routes.parquet repeats). `pl.scan_parquet("index/frames.parquet")` reads the
directory as one table. While `build_index` reads routes, `FrameWriter` streams their tables to new parts
as soon as a part is full, so the parent never holds more than one part of rows; at the end the parts
that held changed or removed routes are rewritten without them and the remainder is merged into the
smallest part. An index written before parts (one `frames.parquet` file) is still read, and migrated to
parts by the next `build_index`, which says so.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lead_stream.core.errors import LeadFormatError
from lead_stream.core.parts import part_files, split_routes, update_parts, write_part
from lead_stream.index.tables import index_dir, table_path
from lead_stream.schemas.tables import BUILD_ID_KEY, FRAMES_SCHEMA, SchemaError, check_version, conform

FRAMES_PART_ROWS = 1 << 16  # frames per part at most (a longer route alone may exceed it)
PLACEMENT_FILENAME = "frame_parts.parquet"  # route_id -> part, next to routes.parquet
_PLACEMENT_SCHEMA = pa.schema([("route_id", pa.string()), ("part", pa.string())])


def frames_path(data_root: Path) -> Path:
    """`index/frames.parquet`: a directory of parts (or, written by an older version, one file)."""
    return table_path(data_root, "frames")


def _prepare(table: pa.Table) -> pa.Table:
    table = table.sort_by([("route_id", "ascending"), ("frame_idx", "ascending")])
    return conform(table, "frames")


def frames_schema(data_root: Path) -> pa.Schema:
    """Schema (with version metadata) of the frames table, from its first part or its single file.

    Raises:
        LeadFormatError: no frames table.
    """
    path = frames_path(data_root)
    if path.is_file():
        return pq.read_schema(path)
    parts = part_files(path)
    if not parts:
        raise LeadFormatError(path, f"missing (build the index first: lead-stream index {data_root})")
    return pq.read_schema(parts[0])


def scan_frames(data_root: Path) -> pl.LazyFrame:
    """The frames table as a lazy scan (only the columns a query uses are read), version-checked.

    Raises:
        LeadFormatError: no frames table, or one of another schema version.
    """
    path = frames_path(data_root)
    try:
        check_version(frames_schema(data_root), "frames", path)
    except SchemaError as error:
        raise LeadFormatError(path, str(error).split(": ", 1)[-1]) from None
    return pl.scan_parquet(path)


def num_frames(data_root: Path) -> int:
    """Rows of the frames table (Parquet footers only)."""
    path = frames_path(data_root)
    files = [path] if path.is_file() else part_files(path)
    return sum(pq.read_metadata(f).num_rows for f in files)


def read_placement(data_root: Path) -> tuple[dict[str, str], str | None]:
    """(route_id → part, build id) of the parts layout; ({}, None) when there is none (or it is broken)."""
    path = index_dir(data_root) / PLACEMENT_FILENAME
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid):
        return {}, None
    placement = dict(zip(table.column("route_id").to_pylist(), table.column("part").to_pylist()))
    live = {p.name for p in part_files(frames_path(data_root))}
    if not set(placement.values()) <= live:
        return {}, None
    build = (table.schema.metadata or {}).get(BUILD_ID_KEY)
    return placement, build.decode() if build else None


def write_placement(data_root: Path, placement: dict[str, str], build_id: str) -> None:
    from lead_stream.core.atomic import atomic_path

    routes = sorted(placement)
    table = pa.table(
        {"route_id": routes, "part": [placement[r] for r in routes]},
        schema=_PLACEMENT_SCHEMA.with_metadata({BUILD_ID_KEY: build_id.encode()}),
    )
    with atomic_path(index_dir(data_root) / PLACEMENT_FILENAME) as tmp:
        pq.write_table(table, tmp, compression="zstd")


class FrameWriter:
    """Collects the frames tables of the routes read now and writes them as parts while they arrive."""

    def __init__(self, data_root: Path, compression: str) -> None:
        self.directory = frames_path(data_root)
        self.compression = compression
        self.placement: dict[str, str] = {}
        self.num_rows = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        if self.directory.is_file():  # an index from before parts: migrated by `finish`
            self.directory = self.directory.with_name("frames.parquet.parts")
            shutil.rmtree(self.directory, ignore_errors=True)

    def add(self, frames: pa.Table) -> None:
        """One route's frames table."""
        self._buffer.append(frames)
        self._buffered += frames.num_rows
        self.num_rows += frames.num_rows
        if self._buffered >= FRAMES_PART_ROWS:
            self._flush()

    def _flush(self) -> None:
        table = pa.concat_tables(self._buffer)
        name = write_part(self.directory, table, _prepare, self.compression)
        self.placement.update(dict.fromkeys(table.column("route_id").unique().to_pylist(), name))
        self._buffer, self._buffered = [], 0

    def finish(
        self, data_root: Path, old: dict[str, str], drop: set[str], reused: list[str]
    ) -> dict[str, str]:
        """Drop the stored rows of `drop`, keep the rest, add the remainder; returns route_id → part.

        Args:
            data_root: the data root.
            old: route_id → part of the previous build ({} for none or an older single-file index).
            drop: previous routes whose rows go (re-read or removed).
            reused: routes whose previous rows are kept.
        """
        rest = pa.concat_tables(self._buffer) if self._buffer else FRAMES_SCHEMA.empty_table()
        self._buffer, self._buffered = [], 0
        legacy = frames_path(data_root)
        if legacy.is_file():
            warnings.warn(f"{legacy}: migrating the frames table to parts (frames.parquet/)", stacklevel=3)
            kept = pq.read_table(legacy, filters=[("route_id", "in", reused)]) if reused else None
            tables = [conform(t, "frames") for t in (kept, rest) if t is not None and t.num_rows]
            table = pa.concat_tables(tables) if tables else FRAMES_SCHEMA.empty_table()
            placement = dict(self.placement)
            for group in split_routes(table, FRAMES_PART_ROWS):
                name = write_part(self.directory, group, _prepare, self.compression)
                placement.update(dict.fromkeys(group.column("route_id").unique().to_pylist(), name))
            if not placement:
                write_part(self.directory, table, _prepare, self.compression)
            legacy.unlink()
            self.directory.replace(legacy)
            return placement
        empty = ""  # an empty part kept so readers see the schema of an index without frames
        if not old:  # nothing kept from before: new parts only, then the previous ones go
            placement = dict(self.placement)
            if rest.num_rows or not placement:
                empty = name = write_part(self.directory, rest, _prepare, self.compression)
                placement.update(dict.fromkeys(rest.column("route_id").unique().to_pylist(), name))
        else:
            merged = update_parts(
                self.directory,
                old,
                drop,
                conform(rest, "frames") if rest.num_rows else rest,
                max_rows=FRAMES_PART_ROWS,
                prepare=_prepare,
                compression=self.compression,
            )
            placement = {**self.placement, **merged}
        live = set(placement.values()) | {empty}
        for path in part_files(self.directory):  # previous parts, parts of a killed build, of routes gone
            if path.name not in live:
                path.unlink()
        return placement
