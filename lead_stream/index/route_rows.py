"""One raw route (its copies: folder and/or zips) → its row of routes.parquet and its frames table (every
scalar of every meta, with each LEAD meta schema's meaning), plus the stat stamp that decides whether an
unchanged route is read again."""

from __future__ import annotations

import hashlib
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
from lead_stream.schemas.tables import (
    INFRACTION_COLUMNS,
    META_COLUMNS,
    MODALITIES,
    NESTED_META_DICTS,
    SCHEMA_VERSION,
    conform,
)
from lead_stream.sources.discovery import route_completed_but_failed, route_usability
from lead_stream.sources.lead_schema import depth_resolution_ratio, lead_schema_of, target_dataset
from lead_stream.sources.pickles import loads_lzma_pickle
from lead_stream.sources.route import Route, open_route
from lead_stream.sources.stores import RouteStore, is_zip_locator, locator_stamp, open_store

_FRAME_FILE_RE = re.compile(r"^(\d{4,})\.[^.]+$")
_TOWN_RE = re.compile(r"^(Town\d+\w*?)_")


def _frames_in(names: list[str]) -> set[int]:
    """Frame numbers of the `NNNN.ext` names of a modality folder."""
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


def _column(values: list[Any], kind: pa.DataType, key: str, store: RouteStore) -> pa.Array:
    try:
        array = pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        converted = []
        for frame_idx, value in enumerate(values):
            try:
                converted.append(_convert(value, kind))
            except TypeError as error:
                raise LeadFormatError(
                    store.path_of(f"metas/{frame_idx:04d}.pkl"),
                    f"key {key!r}: {error} (frames schema v{SCHEMA_VERSION})",
                ) from None
        array = pa.array(converted, type=kind)
    if pa.types.is_floating(kind) and array.null_count < len(array):
        array = pc.if_else(pc.is_finite(array), array, pa.scalar(None, kind))  # inf/nan -> null
    return array


def _results_row(results: Mapping[str, Any] | None, path: Path | str) -> dict[str, Any]:
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
    data_root: Path, route_id: str, sources: tuple[str, ...], stat_stamp: str
) -> tuple[dict[str, Any], pa.Table | None, tuple[str, str] | None]:
    """Read one route: its routes row, its frames table (None if unreadable) and the error (path, problem).

    Args:
        data_root: the data root (recorded locations are relative to it).
        route_id: `"<Scenario>/<route_dir>"`.
        sources: locators of every copy of the route (`discover_sources`); the first is read, the others
            must hold the same files (`open_route`).
        stat_stamp: `route_stamp` of `sources`, stored in the row.
    """
    row: dict[str, Any] = {
        "route_id": route_id,
        "scenario": route_id.split("/")[0],
        "source": sources[0],
        "source_kind": source_kind(sources[0]),
        "num_sources": len(sources),
        "lead_schema": None,
        "depth_resolution_ratio": None,
        "fingerprint": "",
        "stat_stamp": stat_stamp,
        "content_hash": None,  # set by index --verify-content (index/content.py)
        "num_frames": 0,
        "num_metas": 0,
        "has_results": False,
        "has_meta0": False,
        "read_error": None,
        "completed_but_failed": False,
        **{f"has_{m}": False for m in MODALITIES},
    }
    town_match = _TOWN_RE.match(route_id.split("/")[-1])
    row["town"] = town_match.group(1) if town_match else None
    row.update(_results_row(None, route_id))
    try:
        route = open_route(data_root, route_id, sources)
        store = route.store
        row["fingerprint"] = (
            route.fingerprint()
        )  # before reading: a change made during the read shows next time
        present = {m: _frames_in(route.frames_present(m)) for m in MODALITIES}
        row.update(num_metas=len(present["metas"]), **{f"has_{m}": store.is_dir(m) for m in MODALITIES})
        results = route.results()
        row["has_results"] = results is not None
        row.update(_results_row(results, store.path_of("results.json")))
        has_meta0 = route.has_meta0()
        num_frames = route.num_frames()
        row.update(has_meta0=has_meta0, num_frames=num_frames)
        usable, reason = route_usability(results, has_meta0)
        failed = route_completed_but_failed(results, has_meta0)
        row.update(usable=usable, reason=reason, completed_but_failed=failed)
        frames, first_meta = _frames_table(route, num_frames, usable, failed, present)
        if first_meta is not None:
            row["lead_schema"] = lead_schema_of(first_meta)
            row["depth_resolution_ratio"] = _depth_ratio(first_meta, store.path_of("metas/0000.pkl"))
    except LeadFormatError as error:
        problem = f"{relative_path(error.path, data_root)}: {error.problem}"
        row.update(
            usable=False, completed_but_failed=False, reason=f"unreadable: {problem}", read_error=problem
        )
        return row, None, (str(error.path), error.problem)
    if frames.num_rows and frames.column("town").null_count < frames.num_rows:
        row["town"] = next(t for t in frames.column("town").to_pylist() if t is not None)
    return row, frames, None


def source_kind(locator: str) -> str:
    """ "zip" for a zipped route's locator, else "folder"."""
    return "zip" if is_zip_locator(locator) else "folder"


def _depth_ratio(meta: dict[str, Any], path: Path | str) -> int:
    try:
        return depth_resolution_ratio(meta)
    except ValueError as error:
        raise LeadFormatError(path, str(error)) from None


def _meta_getters() -> list[tuple[str, str | None]]:
    """(key, nested key) per META_COLUMNS entry: "dataset_information.save_depth_bits" → a dict lookup."""
    getters = []
    for column in META_COLUMNS:
        outer, _, inner = column.key.partition(".")
        getters.append((outer, inner or None) if outer in NESTED_META_DICTS else (column.key, None))
    return getters


_GETTERS = _meta_getters()
_TARGET_DATASET = next(i for i, c in enumerate(META_COLUMNS) if c.column == "target_dataset")


def _meta_values(meta: dict[str, Any]) -> list[Any]:
    """The META_COLUMNS values of one meta, with each schema's meaning (target_dataset moved in current)."""
    get = meta.get
    values = [get(key) if inner is None else _nested(get(key), inner) for key, inner in _GETTERS]
    if values[_TARGET_DATASET] is None:
        values[_TARGET_DATASET] = target_dataset(meta)
    return values


def _nested(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _frames_table(
    route: Route, num_frames: int, usable: bool, failed: bool, present: Mapping[str, set[int]]
) -> tuple[pa.Table, dict[str, Any] | None]:
    """One row per frame of `route` (position, usability, scalar meta columns, has_<modality> flags), and
    the route's first meta (None if it has none)."""
    idx = np.arange(num_frames, dtype=np.int32)
    metas = present["metas"]
    rows: list[list[Any]] = []
    first_meta = None
    if metas:  # a route without any meta (unfinished) keeps null meta columns
        missing = sorted(set(range(num_frames)) - metas)
        if missing:
            raise LeadFormatError(
                route.store.path_of(f"metas/{missing[0]:04d}.pkl"),
                f"missing ({len(missing)} of {num_frames} metas absent; bboxes/ defines the frames)",
            )
        read = route.store.read
        for frame_idx in range(num_frames):  # the hot loop: one lzma pickle, then ~100 dict lookups
            rel = f"metas/{frame_idx:04d}.pkl"
            try:
                meta = loads_lzma_pickle(read(rel), rel)
            except LeadFormatError as error:
                raise LeadFormatError(route.store.path_of(rel), error.problem) from None
            if not isinstance(meta, dict):
                raise LeadFormatError(
                    route.store.path_of(rel), f"expected a dict of measurements, found {type(meta).__name__}"
                )
            if first_meta is None:
                first_meta = meta
            rows.append(_meta_values(meta))
    values = list(zip(*rows)) if rows else []
    arrays: dict[str, Any] = {
        "route_id": pa.array([route.route_id] * num_frames, pa.string()),
        "scenario": pa.array([route.scenario] * num_frames, pa.string()),
        "frame_idx": idx,
        "num_frames": np.full(num_frames, num_frames, np.int32),
        "frames_from_start": idx,
        "frames_to_end": (num_frames - 1 - idx).astype(np.int32),
        "usable": np.full(num_frames, usable, np.bool_),
        "completed_but_failed": np.full(num_frames, failed, np.bool_),
    }
    for i, c in enumerate(META_COLUMNS):
        if rows:
            arrays[c.column] = _column(list(values[i]), c.type, c.key, route.store)
        else:
            arrays[c.column] = pa.nulls(num_frames, c.type)
    for m in MODALITIES:
        arrays[f"has_{m}"] = np.isin(idx, np.fromiter(present[m], np.int64, len(present[m])))
    return conform(pa.table(arrays), "frames"), first_meta


def route_stamp(data_root: Path, sources: tuple[str, ...]) -> str:
    """Cheap change stamp of a route's copies (stats only; a remote zip costs one HEAD request)."""
    digest = hashlib.blake2b(digest_size=16)
    for locator in sources:
        digest.update(f"{locator}={locator_stamp(data_root, locator)};".encode())
    return digest.hexdigest()


def route_fingerprint(data_root: Path, route_id: str, sources: tuple[str, ...]) -> str:
    """`Route.fingerprint()` of the copy `read_route` reads (stats every file of a folder; "" if unreadable)."""
    try:
        return open_store(data_root, sources[0]).fingerprint(route_id)
    except LeadFormatError:
        return ""


def route_fingerprints(data_root: Path, route_ids: list[str], copies: list[tuple[str, ...]]) -> list[str]:
    """`route_fingerprint` of many routes (one pool task per chunk of routes)."""
    return [route_fingerprint(data_root, rid, c) for rid, c in zip(route_ids, copies)]
