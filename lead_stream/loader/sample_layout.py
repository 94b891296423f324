"""The sample format as the loader reads it: member names per sensor variant, where each array of a variant's
group lands in a batch row (the nav block, the dense rasters, the variable-size arrays), and the fast
`GroupPlan` of a group table (built once per distinct table: every sample of a cache has the same one).
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

import numpy as np

from lead_stream.cache.features import EGO_FIELDS, RUN_CODED, VARIANTS
from lead_stream.core.array_filters import aligned, array_spec
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    DEPTH_HEIGHT_PX,
    DEPTH_WIDTH_PX,
    NUM_BOX_FIELDS,
    NUM_COMMANDS,
    NUM_RADAR_QUERIES,
    NUM_ROUTE_POINTS,
    NUM_WAYPOINTS,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.core.container import GroupTable, TableEntry

MEMBER_STEMS = ("rgb.jpg",)  # one per variant: rgb.jpg, rgb_pert.jpg
SHARED_MEMBERS = ("arrays.lz4",)  # one group per variant + the targets group
_PERT = "_pert"
VARIANT_GROUPS = dict(zip((False, True), VARIANTS))  # arrays.lz4 group of each sensor variant


def variant_member(stem: str, perturbated: bool) -> str:
    """`rgb.jpg` → `rgb_pert.jpg` for the perturbated variant (CONTRACTS §3 names)."""
    if not perturbated:
        return stem
    name, ext = stem.split(".", 1)
    return f"{name}{_PERT}.{ext}"


def expected_members() -> frozenset[str]:
    """Every member name a sample must have (both variants' JPEGs and arrays.lz4)."""
    names = {variant_member(stem, pert) for stem in MEMBER_STEMS for pert in (False, True)}
    return frozenset(names | set(SHARED_MEMBERS))


def command_one_hot(command: int) -> int:
    """LEAD's one-hot index of a RoadOption value: c < 0 → 4, then c - 1, out of range → 3."""
    if command < 0:
        command = 4
    command -= 1
    return command if 0 <= command < NUM_COMMANDS else 3


def command_one_hot_array(commands: np.ndarray) -> np.ndarray:
    """`command_one_hot` of every entry of an integer array."""
    index = np.where(commands < 0, 4, commands) - 1
    return np.where((index >= 0) & (index < NUM_COMMANDS), index, 3)


# Small float32 arrays of a group, in the order the shard writer stores them (`features.STORED_SPECS`): when
# a group's table has exactly these, unfiltered and back to back, one flat copy moves all of them into `nav`.
NAV_LAYOUT = (
    ("radar_detections", (NUM_RADAR_QUERIES, 4)),
    ("target_point", (2,)),
    ("target_point_previous", (2,)),
    ("target_point_next", (2,)),
    ("future_waypoints", (NUM_WAYPOINTS, 2)),
    ("future_yaws_rad", (NUM_WAYPOINTS,)),
    ("route", (NUM_ROUTE_POINTS, 2)),
    ("ego", (len(EGO_FIELDS),)),
)
NAV_SLICES: dict[str, tuple[int, int, tuple[int, ...]]] = {}
_pos = 0
for _name, _shape in NAV_LAYOUT:
    NAV_SLICES[_name] = (_pos, _pos + math.prod(_shape), _shape)
    _pos += math.prod(_shape)
NAV_WIDTH = _pos  # float32 values per sample in BatchBuffers.nav
EGO_COLUMNS = {
    name: NAV_SLICES["ego"][0] + k for k, name in enumerate(EGO_FIELDS)
}  # nav column of each ego field
DENSE_RASTERS = {  # uint8 per-sample rasters of BatchBuffers: stored array → (attribute, shape); the buffer holds the
    "depth": ("depth_t", (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX)),  # transpose (as stored), the Batch a view of it
}
RASTER_SHAPES = {  # run-coded rasters: per-sample shape in the Batch
    "lidar_bev": (1, BEV_HEIGHT_PX, BEV_WIDTH_PX),
    "semantic": (RGB_HEIGHT_PX, RGB_WIDTH_PX),
    "bev_semantic": (BEV_HEIGHT_PX, BEV_WIDTH_PX),
}
VARIABLE_ARRAYS = ("boxes", "box_waypoints", "box_num_waypoints", "radar") + tuple(
    f"{n}_{part}" for n in RUN_CODED for part in ("values", "lengths", "long")
)
VARIABLE_EXPECTED = {  # (dtype, shape, filter) of each variable-size array of the sample format
    "boxes": ("<f4", (-1, NUM_BOX_FIELDS), "none"),
    "box_waypoints": ("<f4", (-1, NUM_WAYPOINTS, 2), "shuffle"),  # not used by the trainer: skipped
    "box_num_waypoints": ("|u1", (-1,), "none"),  # not used by the trainer: skipped
    "radar": ("<f2", (-1, 5), "transpose+shuffle"),
    **{f"{n}_values": ("|u1", (-1,), "none") for n in RUN_CODED},
    **{f"{n}_lengths": ("|u1", (-1,), "none") for n in RUN_CODED},
    **{f"{n}_long": ("<u2", (-1,), "shuffle") for n in RUN_CODED},
}


@dataclass(frozen=True)
class GroupPlan:
    """How the sample format's group table maps onto batch rows; built once per distinct table."""

    dense: tuple[
        tuple[str, int, int, tuple[int, ...], str], ...
    ]  # attr, data offset, count, stored shape, op
    nav: int  # data offset of the nav arrays, back to back
    dims: struct.Struct  # the dims vector of the variable arrays (`VARIABLE_ARRAYS`, in that order)
    variable_start: int  # data offset of the first variable array
    unit_bytes: tuple[int, ...]  # stored bytes per unit of each variable array's first dimension


def _entries(table: GroupTable) -> dict[str, tuple[int, TableEntry]]:
    return {entry.name: (k, entry) for k, entry in enumerate(table.entries)}


@functools.lru_cache(maxsize=64)
def group_plan(table: GroupTable) -> GroupPlan | None:
    """The fast plan when `table` is the sample format's layout (`features.STORED_SPECS`), else None."""
    entries = _entries(table)
    offsets = table.fixed_offsets
    dense = []
    for name, (attr, shape) in DENSE_RASTERS.items():
        if name not in entries:
            return None
        k, entry = entries[name]
        op = {"nibble": "nibble", "transpose": "transpose", "none": "copy"}.get(entry.filter)
        if entry.dtype != "|u1" or entry.shape != shape or op is None or offsets[k] is None:
            return None
        stored = (shape[0] // 2, shape[1]) if op == "nibble" else shape[::-1] if op == "transpose" else shape
        dense.append((attr, offsets[k], math.prod(stored), stored, op))
    nav_names = [name for name, _ in NAV_LAYOUT]
    if any(name not in entries for name in nav_names):
        return None
    first = entries[nav_names[0]][0]
    for j, (name, shape) in enumerate(NAV_LAYOUT):
        k, entry = entries[name]
        if k != first + j or entry.dtype != "<f4" or entry.filter != "none" or entry.shape != shape:
            return None
        if offsets[k] is None or offsets[k] != offsets[first] + 4 * (NAV_SLICES[name][0]):
            return None
    variable = [entry for entry in table.entries if entry.variable]
    if [e.name for e in variable] != list(VARIABLE_ARRAYS) or table.entries[-len(variable) :] != tuple(
        variable
    ):
        return None
    if any((e.dtype, e.shape, e.filter) != VARIABLE_EXPECTED[e.name] for e in variable):
        return None
    fixed_end = table.dims_bytes
    for k, entry in enumerate(table.entries[: -len(variable)]):
        _, layouts, count = array_spec(entry.dtype, entry.filter, entry.shape)
        fixed_end = offsets[k] + aligned(count * layouts[-1][1].itemsize)
    units = tuple(math.prod(e.shape[1:]) * np.dtype(e.dtype).itemsize for e in variable)
    return GroupPlan(tuple(dense), offsets[first], struct.Struct(f"<{len(variable)}I"), fixed_end, units)


JPEG_NAMES = {False: "rgb.jpg", True: f"rgb{_PERT}.jpg"}
