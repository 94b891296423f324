"""A table of routes' rows ↔ a directory of Parquet parts that is updated in proportion to the change.

A part dataset is a directory `<name>.parquet/` of `part-<id>.parquet` files, each holding whole routes
(rows with the same `route_id`), at most `max_rows` rows unless one route alone is larger. Polars
(`pl.read_parquet` / `pl.scan_parquet` of the directory) and pyarrow read it as one table. Writers keep a
route → part placement elsewhere (the caller's small per-route table). `update_parts` rewrites only the
parts that held a dropped route and adds new rows as new parts, or merged into the smallest part while it
stays under half of `max_rows`, so the number of parts stays about rows / max_rows. Part files are
written under a temporary name outside the directory, then renamed in (readers never see a partial file).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PART_GLOB = "part-*.parquet"
Prepare = Callable[[pa.Table], pa.Table]  # sort / conform a part's rows before writing


def part_files(directory: Path) -> list[Path]:
    """The live part files of a part directory, sorted by name ([] if it does not exist)."""
    return sorted(Path(directory).glob(PART_GLOB)) if Path(directory).is_dir() else []


def write_part(directory: Path, table: pa.Table, prepare: Prepare, compression: str = "zstd") -> str:
    """Write `prepare(table)` as a new part of `directory`; returns its file name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex[:16]}.parquet"
    tmp = directory.parent / f".{directory.name}.{name}.tmp"  # outside: directory readers never see it
    try:
        pq.write_table(prepare(table), tmp, compression=compression)
        tmp.replace(directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return name


def split_routes(table: pa.Table, max_rows: int) -> list[pa.Table]:
    """Rows grouped into parts of whole routes (sorted by route_id), at most `max_rows` rows each."""
    if table.num_rows == 0:
        return []
    table = table.sort_by("route_id")
    route = table.column("route_id").to_numpy(zero_copy_only=False)
    bounds = np.r_[np.flatnonzero(np.r_[True, route[1:] != route[:-1]]), table.num_rows]
    parts, begin = [], 0
    for i in range(1, len(bounds)):
        if bounds[i] - begin > max_rows and bounds[i - 1] > begin:
            parts.append(table.slice(begin, int(bounds[i - 1] - begin)))
            begin = int(bounds[i - 1])
    parts.append(table.slice(begin, int(table.num_rows - begin)))
    return parts


def _place(directory: Path, groups: list[pa.Table], prepare: Prepare, compression: str) -> dict[str, str]:
    placement = {}
    for group in groups:
        name = write_part(directory, group, prepare, compression)
        placement.update(dict.fromkeys(pc.unique(group.column("route_id")).to_pylist(), name))
    return placement


def replace_parts(
    directory: Path, table: pa.Table, *, max_rows: int, prepare: Prepare, compression: str = "zstd"
) -> dict[str, str]:
    """Replace every part of `directory` by parts of `table`; returns route_id → part. An empty table
    leaves one empty part, so readers still see the schema."""
    old = part_files(directory)
    placement = _place(directory, split_routes(table, max_rows), prepare, compression)
    if not placement:
        write_part(directory, table, prepare, compression)
    for path in old:
        path.unlink(missing_ok=True)
    return placement


def update_parts(
    directory: Path,
    placement: Mapping[str, str],
    drop: set[str],
    new_rows: pa.Table,
    *,
    max_rows: int,
    prepare: Prepare,
    compression: str = "zstd",
) -> dict[str, str]:
    """Drop the rows of the routes in `drop`, add `new_rows`; only the parts involved are rewritten.

    Args:
        directory: the part directory.
        placement: route_id → part of every route now stored.
        drop: routes whose stored rows go (changed or removed routes).
        new_rows: rows of the routes written now (none of them stored, or all in `drop`).
        max_rows: part size bound.
        prepare: applied to each part's rows before writing.
        compression: Parquet codec.

    Returns:
        route_id → part of every route stored afterwards.
    """
    directory = Path(directory)
    sizes = {p.name: pq.read_metadata(p).num_rows for p in part_files(directory)}
    touched = {placement[r] for r in drop if r in placement}
    if new_rows.num_rows:
        candidates = [p for p in sizes if p not in touched]
        smallest = min(candidates, key=sizes.__getitem__, default=None)
        if smallest is not None and sizes[smallest] + new_rows.num_rows <= max_rows // 2:
            touched.add(smallest)  # merge small additions: the part count stays bounded
    pending = [new_rows] if new_rows.num_rows else []
    dropped = pa.array(sorted(drop), pa.string())
    for part in sorted(touched):
        if part in sizes:
            old = pq.read_table(directory / part)
            pending.append(old.filter(pc.invert(pc.is_in(old.column("route_id"), dropped))))
    kept = {route: part for route, part in placement.items() if part not in touched and route not in drop}
    if pending:
        schema = pending[0].schema
        merged = pa.concat_tables([t.select(schema.names).cast(schema) for t in pending])
        kept.update(_place(directory, split_routes(merged, max_rows), prepare, compression))
    for part in touched:
        (directory / part).unlink(missing_ok=True)
    if not part_files(directory):
        write_part(directory, new_rows, prepare, compression)
    return kept
