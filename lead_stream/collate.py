"""Raw sample members (`features` doc) → one `Batch`: decode the chosen variant straight into batch arrays.

Per sample only the chosen variant's members are decoded: its JPEG (`rgb.jpg` or `rgb_pert.jpg`) directly
into the batch's (B, H, W, 3) buffer, its group of `arrays.lz4` (two small lz4 calls; the other variant's
block is skipped) whose arrays are views written once into their batch slots (nibble-packed rasters are
unpacked straight into the slot), and the small `targets.json`. Boxes are padded to 90 rows (`num_boxes` counts the
real ones); radar points go to their sensor's block of 75 rows (300 in all, float16 widened to float32);
LiDAR counts (0..5) become float32 count / 5 and depth bytes become metres once per batch, not per sample.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch

from lead_stream.batch import Batch
from lead_stream.codecs import StoredArray, decode_group_stored, unpack_nibbles
from lead_stream.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    DEPTH_HEIGHT_PX,
    DEPTH_MAX_M,
    DEPTH_WIDTH_PX,
    LIDAR_HIST_MAX_COUNT,
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


def _into(arrays: dict[str, StoredArray], name: str, out: np.ndarray) -> None:
    """Write container array `name` into its batch slot (nibbles unpacked there; no intermediate array)."""
    stored = arrays[name]
    if stored.shape != out.shape:
        raise ValueError(f"array {name!r} has shape {stored.shape}, expected {out.shape}")
    if stored.filters == ("nibble",):
        unpack_nibbles(stored.data, out=out)
    else:
        out[...] = stored.restore()


@dataclass
class BatchBuffers:
    """Preallocated numpy arrays for B samples; `fill(i, ...)` writes sample i, `to_batch()` wraps them."""

    size: int

    def __post_init__(self) -> None:
        b = self.size
        self.rgb = np.empty((b, RGB_HEIGHT_PX, RGB_WIDTH_PX, 3), np.uint8)
        self.lidar = np.empty((b, BEV_HEIGHT_PX, BEV_WIDTH_PX), np.uint8)
        self.semantic = np.empty((b, RGB_HEIGHT_PX, RGB_WIDTH_PX), np.uint8)
        self.depth = np.empty((b, DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX), np.uint8)
        self.bev_semantic = np.empty((b, BEV_HEIGHT_PX, BEV_WIDTH_PX), np.uint8)
        self.boxes = np.zeros((b, MAX_NUM_BBOXES, NUM_BOX_FIELDS), np.float32)
        self.num_boxes = np.zeros(b, np.int64)
        self.radar = np.zeros((b, NUM_RADAR_SENSORS * MAX_RADAR_POINTS_PER_SENSOR, 5), np.float32)
        self.radar_detections = np.zeros((b, NUM_RADAR_QUERIES, 4), np.float32)
        self.points = np.zeros((b, 3, 2), np.float32)  # target_point, _previous, _next
        self.commands = np.zeros((b, 2, NUM_COMMANDS), np.float32)
        self.waypoints = np.zeros((b, NUM_WAYPOINTS, 2), np.float32)
        self.yaws = np.zeros((b, NUM_WAYPOINTS), np.float32)
        self.route = np.zeros((b, NUM_ROUTE_POINTS, 2), np.float32)
        self.scalars = np.zeros((b, 2), np.float32)  # speed_mps, target_speed_mps
        self.flags = np.zeros((b, 3), np.bool_)  # brake, planning_valid, perturbated
        self.frame_idx = np.zeros(b, np.int64)
        self.bucket_idx = np.zeros(b, np.int64)
        self.lidar_bev = np.empty((b, 1, BEV_HEIGHT_PX, BEV_WIDTH_PX), np.float32)  # to_batch's outputs
        self.depth_m = np.empty((b, DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX), np.float32)
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
        sfx = _PERT if perturbated else ""
        self.current_member = name = f"rgb{sfx}.jpg"
        rgb = simplejpeg.decode_jpeg(members[name], colorspace="RGB", buffer=self.rgb[i])
        if rgb.shape != self.rgb.shape[1:]:
            raise ValueError(f"decodes to {rgb.shape}, expected {self.rgb.shape[1:]}")
        self.current_member = name = "arrays.lz4"
        arrays = decode_group_stored(members[name], _GROUPS[perturbated])
        _into(arrays, "lidar_bev", self.lidar[i])
        _into(arrays, "semantic", self.semantic[i])
        _into(arrays, "depth", self.depth[i])
        _into(arrays, "bev_semantic", self.bev_semantic[i])
        boxes = arrays["boxes"].restore()
        if boxes.ndim != 2 or boxes.shape[0] > MAX_NUM_BBOXES or boxes.shape[1] != NUM_BOX_FIELDS:
            raise ValueError(f"boxes shape {boxes.shape}, expected (<= {MAX_NUM_BBOXES}, {NUM_BOX_FIELDS})")
        self.boxes[i, : boxes.shape[0]] = boxes
        self.boxes[i, boxes.shape[0] :] = 0.0
        self.num_boxes[i] = boxes.shape[0]
        self._fill_radar(i, arrays["radar"].restore())
        _into(arrays, "radar_detections", self.radar_detections[i])
        _into(arrays, "target_point", self.points[i, 0])
        _into(arrays, "target_point_previous", self.points[i, 1])
        _into(arrays, "target_point_next", self.points[i, 2])
        _into(arrays, "future_waypoints", self.waypoints[i])
        _into(arrays, "future_yaws_rad", self.yaws[i])
        _into(arrays, "route", self.route[i])
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
        self.commands[i] = 0.0
        self.commands[i, 0, command_one_hot(int(targets["command"]))] = 1.0
        self.commands[i, 1, command_one_hot(int(targets["next_command"]))] = 1.0
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
            "radar_detections",
            "points",
            "commands",
            "waypoints",
            "yaws",
            "route",
            "scalars",
            "flags",
            "frame_idx",
            "bucket_idx",
        ):
            array = getattr(self, name)
            array[dst] = array[src]
        self.route_id[dst] = self.route_id[src]

    def to_batch(self) -> Batch:
        """Wrap the arrays as tensors (no copy except the float conversions of LiDAR and depth).

        The tensors share memory with these arrays: refill only when `unreferenced()` (`BufferPool`).
        """
        t = torch.from_numpy
        lidar = np.divide(self.lidar[:, None], np.float32(LIDAR_HIST_MAX_COUNT), out=self.lidar_bev, dtype=np.float32)
        depth = np.multiply(self.depth, np.float32(DEPTH_MAX_M / 255.0), out=self.depth_m, dtype=np.float32)
        return Batch(
            rgb=t(self.rgb).permute(0, 3, 1, 2),  # (B, 3, H, W) view in channels_last memory format
            lidar_bev=t(lidar),
            radar=t(self.radar),
            speed_mps=t(self.scalars[:, 0].copy()),
            semantic=t(self.semantic),
            depth_m=t(depth),
            bev_semantic=t(self.bev_semantic),
            boxes=t(self.boxes),
            num_boxes=t(self.num_boxes),
            radar_detections=t(self.radar_detections),
            target_point=t(self.points[:, 0].copy()),
            target_point_previous=t(self.points[:, 1].copy()),
            target_point_next=t(self.points[:, 2].copy()),
            command=t(self.commands[:, 0].copy()),
            next_command=t(self.commands[:, 1].copy()),
            future_waypoints=t(self.waypoints),
            future_yaws_rad=t(self.yaws),
            route=t(self.route),
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
