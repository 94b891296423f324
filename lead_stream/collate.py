"""Raw sample members (`features` doc) → one `Batch`: decode the chosen variant straight into batch arrays.

Per sample only the chosen variant's members are decoded: its JPEG (`rgb.jpg` or `rgb_pert.jpg`) directly
into the batch's (B, H, W, 3) buffer, its group of `arrays.lz4` (two small lz4 calls; the other variant's
block is skipped) whose arrays are views written once into their batch slots (nibble-packed rasters are
unpacked straight into the slot), and the small `targets.json`. Boxes are padded to 90 rows (`num_boxes` counts the
real ones); radar points go to their sensor's block of 75 rows (300 in all, float16 widened to float32).
LiDAR counts and depth bytes stay uint8 (the model scales them on the device, `batch`). Each distinct group
table is checked against the batch layout once (`_group_plan`), so a sample costs no per-array validation.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch

from lead_stream.batch import Batch
from lead_stream.codecs import GroupTable, StoredArray, decode_group_block, unpack_nibbles
from lead_stream.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    DEPTH_HEIGHT_PX,
    DEPTH_WIDTH_PX,
    MAX_NUM_BBOXES,
    MAX_RADAR_POINTS_PER_SENSOR,
    NUM_BOX_FIELDS,
    NUM_COMMANDS,
    NUM_RADAR_QUERIES,
    NUM_RADAR_SENSORS,
    NUM_ROUTE_POINTS,
    NUM_WAYPOINTS,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)

MEMBER_STEMS = ("rgb.jpg",)                     # one per variant: rgb.jpg, rgb_pert.jpg
SHARED_MEMBERS = ("arrays.lz4", "targets.json")  # arrays.lz4 holds one group per variant
_PERT = "_pert"
_GROUPS = {False: "normal", True: "perturbated"}  # arrays.lz4 group of each sensor variant


def variant_member(stem: str, perturbated: bool) -> str:
    """`rgb.jpg` → `rgb_pert.jpg` for the perturbated variant (CONTRACTS §3 names)."""
    if not perturbated:
        return stem
    name, ext = stem.split(".", 1)
    return f"{name}{_PERT}.{ext}"


def expected_members() -> frozenset[str]:
    """Every member name a sample must have (both variants' JPEGs, arrays.lz4, targets.json)."""
    names = {variant_member(stem, pert) for stem in MEMBER_STEMS for pert in (False, True)}
    return frozenset(names | set(SHARED_MEMBERS))


def command_one_hot(command: int) -> int:
    """LEAD's one-hot index of a RoadOption value: c < 0 → 4, then c - 1, out of range → 3."""
    if command < 0:
        command = 4
    command -= 1
    return command if 0 <= command < NUM_COMMANDS else 3


# Small float32 arrays of a group, in the order the shard writer stores them (`features`): when a group's
# table has exactly these, unfiltered and back to back, one flat copy moves all of them into `nav`.
_NAV_LAYOUT = (
    ("radar_detections", (NUM_RADAR_QUERIES, 4)),
    ("target_point", (2,)),
    ("target_point_previous", (2,)),
    ("target_point_next", (2,)),
    ("future_waypoints", (NUM_WAYPOINTS, 2)),
    ("future_yaws_rad", (NUM_WAYPOINTS,)),
    ("route", (NUM_ROUTE_POINTS, 2)),
)
_NAV_SLICES: dict[str, tuple[int, int, tuple[int, ...]]] = {}
_pos = 0
for _name, _shape in _NAV_LAYOUT:
    _NAV_SLICES[_name] = (_pos, _pos + math.prod(_shape), _shape)
    _pos += math.prod(_shape)
NAV_WIDTH = _pos  # float32 values per sample in BatchBuffers.nav
_BUFFER_SHAPES = {  # uint8 per-sample rasters of BatchBuffers
    "lidar": (BEV_HEIGHT_PX, BEV_WIDTH_PX),
    "semantic": (RGB_HEIGHT_PX, RGB_WIDTH_PX),
    "depth": (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX),
    "bev_semantic": (BEV_HEIGHT_PX, BEV_WIDTH_PX),
}
_RASTERS = (  # container array → BatchBuffers attribute (uint8, same shape per sample)
    ("lidar_bev", "lidar"),
    ("semantic", "semantic"),
    ("depth", "depth"),
    ("bev_semantic", "bev_semantic"),
)
_F4 = np.dtype("<f4")
_U1 = np.dtype("u1")


@dataclass(frozen=True)
class _GroupPlan:
    """How to move one group table's arrays into batch rows, validated once per distinct table."""

    end: int                                              # bytes the block must have (base + last array end)
    rasters: tuple[tuple[str, int, int, tuple, str, tuple], ...]  # attr, start, count, stored shape, op, stored
    boxes: tuple[int, int, tuple | None]                  # start, rows, stored args when not plain float32
    radar: tuple[int, tuple[str, ...], tuple]             # start, filter chain, layouts
    nav: tuple[tuple[int, int, int, tuple[str, ...], tuple], ...]  # nav start, nav end, start, chain, layouts
    nav_flat: int                                         # start of all nav arrays back to back, or -1


def _entry_of(entries: dict[str, tuple], name: str) -> tuple:
    if name not in entries:
        raise KeyError(name)
    return entries[name]


@functools.lru_cache(maxsize=1024)
def _group_plan(table: GroupTable, base: int) -> _GroupPlan:
    """Validate a group table against the batch layout once (tables repeat across samples)."""
    entries = {entry[0]: entry for entry in table.entries}
    end = base
    for _, _, layouts, count, offset in table.entries:
        end = max(end, base + offset + count * layouts[-1][1].itemsize)
    rasters = []
    for name, attr in _RASTERS:
        _, chain, layouts, count, offset = _entry_of(entries, name)
        shape, dtype = layouts[0]
        expected = _BUFFER_SHAPES[attr]
        if shape != expected:
            raise ValueError(f"array {name!r} has shape {shape}, expected {expected}")
        fast = dtype == _U1 and chain in ((), ("nibble",), ("transpose",))
        op = (chain[0] if chain else "none") if fast else "restore"  # restore: any other filter chain / dtype
        rasters.append((attr, base + offset, count, layouts[-1][0], op, (base + offset, chain, layouts)))
    _, chain, layouts, count, offset = _entry_of(entries, "boxes")
    shape, dtype = layouts[0]
    if len(shape) != 2 or shape[0] > MAX_NUM_BBOXES or shape[1] != NUM_BOX_FIELDS:
        raise ValueError(f"boxes shape {shape}, expected (<= {MAX_NUM_BBOXES}, {NUM_BOX_FIELDS})")
    boxes = (base + offset, shape[0], (base + offset, chain, layouts) if chain or dtype != _F4 else None)
    _, chain, layouts, count, offset = _entry_of(entries, "radar")
    if len(layouts[0][0]) != 2 or layouts[0][0][1] != 5:
        raise ValueError(f"radar shape {layouts[0][0]}, expected (n, 5)")
    radar = (base + offset, chain, layouts)
    nav, flat, next_offset = [], True, None
    for name, expected in _NAV_LAYOUT:
        _, chain, layouts, count, offset = _entry_of(entries, name)
        if layouts[0][0] != expected:
            raise ValueError(f"array {name!r} has shape {layouts[0][0]}, expected {expected}")
        lo, hi, _ = _NAV_SLICES[name]
        nav.append((lo, hi, base + offset, chain, layouts))
        flat = flat and not chain and layouts[0][1] == _F4 and next_offset in (None, offset)
        next_offset = offset + count * layouts[-1][1].itemsize
    return _GroupPlan(end, tuple(rasters), boxes, radar, tuple(nav), nav[0][2] if flat else -1)


def _stored(raw: bytes, start: int, chain: tuple[str, ...], layouts: tuple) -> StoredArray:
    stored_shape, stored_dtype = layouts[-1]
    count = math.prod(stored_shape)
    return StoredArray(np.frombuffer(raw, stored_dtype, count, start).reshape(stored_shape), chain, layouts)


_JPEG_NAMES = {False: "rgb.jpg", True: f"rgb{_PERT}.jpg"}


@dataclass
class BatchBuffers:
    """Preallocated numpy arrays for B samples; `fill(i, ...)` writes sample i, `to_batch()` wraps them."""

    size: int

    def __post_init__(self) -> None:
        b = self.size
        self.rgb = np.empty((b, RGB_HEIGHT_PX, RGB_WIDTH_PX, 3), np.uint8)
        for attr, shape in _BUFFER_SHAPES.items():  # lidar, semantic, depth, bev_semantic (uint8)
            setattr(self, attr, np.empty((b, *shape), np.uint8))
        self.boxes = np.zeros((b, MAX_NUM_BBOXES, NUM_BOX_FIELDS), np.float32)
        self.num_boxes = np.zeros(b, np.int64)
        self.radar = np.zeros((b, NUM_RADAR_SENSORS * MAX_RADAR_POINTS_PER_SENSOR, 5), np.float32)
        self.nav = np.zeros((b, NAV_WIDTH), np.float32)  # _NAV_LAYOUT arrays, flattened back to back
        self.commands = np.zeros((b, 2, NUM_COMMANDS), np.float32)
        self.scalars = np.zeros((b, 2), np.float32)  # speed_mps, target_speed_mps
        self.flags = np.zeros((b, 3), np.bool_)  # brake, planning_valid, perturbated
        self.frame_idx = np.zeros(b, np.int64)
        self.bucket_idx = np.zeros(b, np.int64)
        self.route_id: list[str] = [""] * b
        self.current_member = ""

    def unreferenced(self) -> bool:
        """True when no tensor of a previous `to_batch` still uses these arrays (safe to refill)."""
        for value in vars(self).values():
            # 3 references = this object's attribute, the loop variable and getrefcount's argument
            if isinstance(value, np.ndarray) and sys.getrefcount(value) > 3:
                return False
        return True

    def fill(self, i: int, members: dict[str, bytes], *, perturbated: bool) -> None:
        """Decode sample `i`'s chosen variant into row i; `current_member` names the member on error."""
        self.current_member = name = _JPEG_NAMES[perturbated]
        rgb = simplejpeg.decode_jpeg(members[name], colorspace="RGB", buffer=self.rgb[i])
        if rgb.shape != self.rgb.shape[1:]:
            raise ValueError(f"decodes to {rgb.shape}, expected {self.rgb.shape[1:]}")
        self.current_member = name = "arrays.lz4"
        raw, base, table = decode_group_block(members[name], _GROUPS[perturbated])
        plan = _group_plan(table, base)
        if len(raw) < plan.end:
            raise ValueError(f"group {_GROUPS[perturbated]!r}: its arrays run past the block end")
        frombuffer = np.frombuffer
        for attr, start, count, shape, op, stored in plan.rasters:
            out = getattr(self, attr)[i]
            if op == "restore":
                out[...] = _stored(raw, *stored).restore()
                continue
            data = frombuffer(raw, np.uint8, count, start).reshape(shape)
            if op == "nibble":
                unpack_nibbles(data, out=out)
            elif op == "transpose":
                out[...] = data.T
            else:
                out[...] = data
        start, rows, stored = plan.boxes
        self.boxes[i, :rows] = (
            _stored(raw, *stored).restore()
            if stored
            else frombuffer(raw, _F4, rows * NUM_BOX_FIELDS, start).reshape(rows, NUM_BOX_FIELDS)
        )
        self.boxes[i, rows:] = 0.0
        self.num_boxes[i] = rows
        self._fill_radar(i, _stored(raw, *plan.radar).restore())
        if plan.nav_flat >= 0:
            self.nav[i] = frombuffer(raw, _F4, NAV_WIDTH, plan.nav_flat)
        else:
            for lo, hi, start, chain, layouts in plan.nav:
                self.nav[i, lo:hi] = _stored(raw, start, chain, layouts).restore().reshape(-1)
        self.current_member = name = "targets.json"
        self._fill_targets(i, json.loads(bytes(members[name])), perturbated)

    def _fill_radar(self, i: int, points: np.ndarray) -> None:
        if points.ndim != 2 or points.shape[1] != 5:
            raise ValueError(f"radar shape {points.shape}, expected (n, 5)")
        row = self.radar[i]
        row[...] = 0.0
        if not points.shape[0]:
            return
        sensor = points[:, 4].astype(np.intp)
        counts = np.bincount(sensor, minlength=NUM_RADAR_SENSORS)  # ValueError on a negative id
        if counts.shape[0] != NUM_RADAR_SENSORS:
            raise ValueError(f"sensor ids outside 0..{NUM_RADAR_SENSORS - 1}")
        if (sensor[1:] < sensor[:-1]).any():  # shards store points grouped by sensor; sort otherwise
            points = points[np.argsort(sensor, kind="stable")]
        start = 0
        for sensor_id, count in enumerate(counts.tolist()):
            if count > MAX_RADAR_POINTS_PER_SENSOR:
                raise ValueError(f"{count} points for sensor {sensor_id} (max {MAX_RADAR_POINTS_PER_SENSOR})")
            slot = sensor_id * MAX_RADAR_POINTS_PER_SENSOR
            row[slot : slot + count] = points[start : start + count]
            start += count

    def _fill_targets(self, i: int, targets: dict, perturbated: bool) -> None:
        self.scalars[i] = (targets["speed_mps"], targets["target_speed_mps"])
        commands = self.commands[i]
        commands[...] = 0.0
        commands[0, command_one_hot(int(targets["command"]))] = 1.0
        commands[1, command_one_hot(int(targets["next_command"]))] = 1.0
        self.flags[i] = (bool(targets["brake"]), bool(targets["planning_valid"]), perturbated)

    def copy_row(self, dst: int, src: int) -> None:
        """Make row `dst` a copy of row `src` (the skip policy repeats a good sample of the batch)."""
        for name in (
            "rgb",
            "lidar",
            "semantic",
            "depth",
            "bev_semantic",
            "boxes",
            "num_boxes",
            "radar",
            "nav",
            "commands",
            "scalars",
            "flags",
            "frame_idx",
            "bucket_idx",
        ):
            array = getattr(self, name)
            array[dst] = array[src]
        self.route_id[dst] = self.route_id[src]

    def _nav(self, name: str) -> torch.Tensor:
        lo, hi, shape = _NAV_SLICES[name]
        return torch.from_numpy(np.ascontiguousarray(self.nav[:, lo:hi]).reshape(self.size, *shape))

    def to_batch(self) -> Batch:
        """Wrap the arrays as tensors: no copy but the small per-sample vectors (nav, scalars, flags).

        The shared tensors use these arrays' memory: refill only when `unreferenced()` (`BufferPool`).
        """
        t = torch.from_numpy
        nav = self._nav
        return Batch(
            rgb=t(self.rgb).permute(0, 3, 1, 2),  # (B, 3, H, W) view in channels_last memory format
            lidar_bev=t(self.lidar[:, None]),  # (B, 1, X, Y) uint8 counts
            radar=t(self.radar),
            speed_mps=t(self.scalars[:, 0].copy()),
            semantic=t(self.semantic),
            depth_u8=t(self.depth),
            bev_semantic=t(self.bev_semantic),
            boxes=t(self.boxes),
            num_boxes=t(self.num_boxes),
            radar_detections=nav("radar_detections"),
            target_point=nav("target_point"),
            target_point_previous=nav("target_point_previous"),
            target_point_next=nav("target_point_next"),
            command=t(self.commands[:, 0].copy()),
            next_command=t(self.commands[:, 1].copy()),
            future_waypoints=nav("future_waypoints"),
            future_yaws_rad=nav("future_yaws_rad"),
            route=nav("route"),
            target_speed_mps=t(self.scalars[:, 1].copy()),
            brake=t(self.flags[:, 0].copy()),
            planning_valid=t(self.flags[:, 1].copy()),
            perturbated=t(self.flags[:, 2].copy()),
            frame_idx=t(self.frame_idx),
            bucket_idx=t(self.bucket_idx),
            route_id=list(self.route_id),
        )


class BufferPool:
    """Recycles `BatchBuffers` once no consumer holds a tensor of theirs.

    Filling a fresh ~20 MB batch costs page faults and cache misses on every byte; a recycled one is warm.
    A buffer set is refilled only when `unreferenced()`, so a batch the trainer still holds is never
    overwritten; when none is free a new set is made (kept if the pool has room).
    """

    def __init__(self, max_buffers: int = 3) -> None:
        self.max_buffers = max_buffers
        self._buffers: list[BatchBuffers] = []

    def take(self, size: int) -> BatchBuffers:
        """A buffer set for `size` samples whose previous batch nobody references, else a new one."""
        for buffers in self._buffers:
            if buffers.size == size and buffers.unreferenced():
                buffers.route_id = [""] * size
                buffers.current_member = ""
                return buffers
        buffers = BatchBuffers(size)
        if len(self._buffers) < self.max_buffers:
            self._buffers.append(buffers)
        return buffers
