"""One raw route → its row of routes.parquet and its frames table (every scalar of every meta), plus the
stat stamp that decides whether an unchanged route is read again."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead_stream.core.constants import RESULT_INFRACTION_KEYS
from lead_stream.core.errors import LeadFormatError
from lead_stream.core.layout import relative_path
from lead_stream.schemas.tables import INFRACTION_COLUMNS, META_COLUMNS, MODALITIES, SCHEMA_VERSION, conform
from lead_stream.sources.discovery import route_usability
from lead_stream.sources.pickles import read_lzma_pickle
from lead_stream.sources.route import Route

_FRAME_FILE_RE = re.compile(r"^(\d{4,})\.[^.]+$")
_TOWN_RE = re.compile(r"^(Town\d+\w*?)_")


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
        if isinstance(value, (list, tuple)) and len(value) <= 1:  # vehicle_door_side can be ["left"]
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
                raise LeadFormatError(
                    metas_dir / f"{frame_idx:04d}.pkl",
                    f"key {key!r}: {error} (frames schema v{SCHEMA_VERSION})",
                ) from None
        array = pa.array(converted, type=kind)
    if pa.types.is_floating(kind) and array.null_count < len(array):
        array = pc.if_else(pc.is_finite(array), array, pa.scalar(None, kind))  # inf/nan -> null
    return array


def _results_row(results: Mapping[str, Any] | None, path: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "status": None,
        "score_composed": None,
        "score_route": None,
        "score_penalty": None,
        "num_infractions": None,
        "route_length_m": None,
        "duration_game_s": None,
    }
    row.update(dict.fromkeys(INFRACTION_COLUMNS))
    if results is None:
        return row
    try:
        scores = results.get("scores") or {}
        meta = results.get("meta") or {}
        infractions = results.get("infractions") or {}
        row.update(
            status=results.get("status"),
            score_composed=scores.get("score_composed"),
            score_route=scores.get("score_route"),
            score_penalty=scores.get("score_penalty"),
            num_infractions=results.get("num_infractions"),
            route_length_m=meta.get("route_length"),
            duration_game_s=meta.get("duration_game"),
        )
        for key, name in zip(RESULT_INFRACTION_KEYS, INFRACTION_COLUMNS):
            row[name] = len(infractions.get(key) or ())
    except (AttributeError, TypeError) as error:
        raise LeadFormatError(path, f"unexpected results.json structure: {error}") from None
    return row


def read_route(
    data_root: Path, route_id: str, stat_stamp: str
) -> tuple[dict[str, Any], pa.Table | None, tuple[str, str] | None]:
    """Read one route: its routes row, its frames table (None if unreadable) and the error (path, problem)."""
    route = Route(data_root, route_id)
    route_dir = Path(route.path)
    fingerprint = route.fingerprint()  # before reading: a change made during the read shows up next time
    present = {m: _frames_on_disk(route_dir / m) for m in MODALITIES}
    row: dict[str, Any] = {
        "route_id": route_id,
        "scenario": route.scenario,
        "fingerprint": fingerprint,
        "stat_stamp": stat_stamp,
        "num_frames": 0,
        "num_metas": len(present["metas"]),
        "has_results": False,
        "has_meta0": False,
        "read_error": None,
        **{f"has_{m}": (route_dir / m).is_dir() for m in MODALITIES},
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
        problem = f"{relative_path(error.path, data_root)}: {error.problem}"
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
    if metas:  # a route without any meta (unfinished) keeps null meta columns
        metas_dir = Path(route.path) / "metas"
        missing = sorted(set(range(num_frames)) - metas)
        if missing:
            raise LeadFormatError(
                metas_dir / f"{missing[0]:04d}.pkl",
                f"missing ({len(missing)} of {num_frames} metas absent; bboxes/ defines the frames)",
            )
        prefix = f"{metas_dir}{os.sep}"
        for frame_idx in range(num_frames):  # the hot loop: one lzma pickle, then ~100 dict lookups
            meta = read_lzma_pickle(f"{prefix}{frame_idx:04d}.pkl")
            if not isinstance(meta, dict):
                raise LeadFormatError(
                    metas_dir / f"{frame_idx:04d}.pkl",
                    f"expected a dict of measurements, found {type(meta).__name__}",
                )
            get = meta.get
            rows.append([get(key) for key in keys])
    values = list(zip(*rows)) if rows else []
    arrays: dict[str, Any] = {
        "route_id": pa.array([route.route_id] * num_frames, pa.string()),
        "scenario": pa.array([route.scenario] * num_frames, pa.string()),
        "frame_idx": idx,
        "num_frames": np.full(num_frames, num_frames, np.int32),
        "frames_from_start": idx,
        "frames_to_end": (num_frames - 1 - idx).astype(np.int32),
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


def stat_stamp(route_dir: str) -> str:
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
                rows = sorted(
                    f"{e.name}:{st.st_size}:{st.st_mtime_ns}" for e in entries for st in (e.stat(),)
                )
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
