"""Raw sample members (CONTRACTS §3) → one `Batch`: decode the chosen variant straight into batch arrays.

Per sample only the chosen variant's members are decoded (`rgb.jpg` or `rgb_pert.jpg`, ...), the
JPEG directly into the batch's (B, H, W, 3) buffer. Boxes are padded to 90 rows (`num_boxes` counts
the real ones); radar points go to their sensor's block of 75 rows (300 in all); LiDAR counts (0..5)
become float32 count / 5 and depth bytes become metres once per batch, not per sample.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import struct
from dataclasses import dataclass

import lz4.block
import numpy as np
import simplejpeg
import torch

from lead_stream.batch import Batch
from lead_stream.codecs import LZ4_MAGIC
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

MEMBER_STEMS = (
    "rgb.jpg",
    "lidar_bev.lz4",
    "semantic.lz4",
    "depth.lz4",
    "bev_semantic.lz4",
    "boxes.npy",
    "radar.npy",
    "radar_detections.npy",
)
SHARED_MEMBERS = ("targets.json",)
_PERT = "_pert"
_LZ4_HEADER = struct.Struct("<4sB B")  # codecs' lz4 header: magic, len(dtype str), ndim; then dtype, shape
_SENSOR_IDS = np.arange(NUM_RADAR_SENSORS)
_NUM_TARGET_VALUES = 3 * 2 + NUM_WAYPOINTS + 2 + NUM_WAYPOINTS * 2 + NUM_ROUTE_POINTS * 2


def variant_member(stem: str, perturbated: bool) -> str:
    """`rgb.jpg` → `rgb_pert.jpg` for the perturbated variant (CONTRACTS §3 names)."""
    if not perturbated:
        return stem
    name, ext = stem.split(".", 1)
    return f"{name}{_PERT}.{ext}"


def expected_members() -> frozenset[str]:
    """Every member name a sample must have (both variants + targets.json)."""
    names = {variant_member(stem, pert) for stem in MEMBER_STEMS for pert in (False, True)}
    return frozenset(names | set(SHARED_MEMBERS))


def command_one_hot(command: int) -> int:
    """LEAD's one-hot index of a RoadOption value: c < 0 → 4, then c - 1, out of range → 3."""
    if command < 0:
        command = 4
    command -= 1
    return command if 0 <= command < NUM_COMMANDS else 3


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    fields = ast.literal_eval(header.decode("latin1"))
    dtype = np.dtype(fields["descr"])
    if fields["fortran_order"] or dtype.hasobject:
        raise ValueError(f"unsupported .npy header {fields}")
    return dtype, tuple(fields["shape"])


def _npy(payload: bytes | memoryview) -> np.ndarray:
    """A read-only view of a C-order, non-object .npy payload (header parse cached: no per-call eval)."""
    head = bytes(payload[:12])
    if head[:6] != b"\x93NUMPY":
        raise ValueError("not an .npy payload (bad magic)")
    start = 10 if head[6] == 1 else 12
    length = int.from_bytes(head[8:start], "little")
    dtype, shape = _npy_header(bytes(payload[start : start + length]))
    return np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=start + length).reshape(shape)


@functools.lru_cache(maxsize=256)
def _lz4_header(head: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, payload offset) of a lead-stream lz4 header (`codecs.encode_lz4`) (cached)."""
    magic, dtype_len, ndim = _LZ4_HEADER.unpack_from(head, 0)
    if magic != LZ4_MAGIC:
        raise ValueError(f"not a lead-stream lz4 array (magic {magic!r})")
    pos = _LZ4_HEADER.size
    dtype = np.dtype(head[pos : pos + dtype_len].decode("ascii"))
    pos += dtype_len
    shape = struct.unpack_from(f"<{ndim}Q", head, pos)
    return dtype, shape, pos + 8 * ndim


def _lz4(payload: memoryview | bytes) -> np.ndarray:
    """`codecs.decode_lz4` for a payload view, without copying the compressed bytes."""
    view = memoryview(payload)
    dtype_len, ndim = view[4], view[5]
    dtype, shape, pos = _lz4_header(bytes(view[: _LZ4_HEADER.size + dtype_len + 8 * ndim]))
    return np.frombuffer(lz4.block.decompress(view[pos:]), dtype=dtype).reshape(shape)


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
        self.route_id: list[str] = [""] * b
        self.current_member = ""

    def fill(self, i: int, members: dict[str, bytes], *, perturbated: bool) -> None:
        """Decode sample `i`'s chosen variant into row i; `current_member` names the member on error."""
        sfx = _PERT if perturbated else ""
        self.current_member = name = f"rgb{sfx}.jpg"
        rgb = simplejpeg.decode_jpeg(members[name], colorspace="RGB", buffer=self.rgb[i])
        if rgb.shape != self.rgb.shape[1:]:
            raise ValueError(f"decodes to {rgb.shape}, expected {self.rgb.shape[1:]}")
        for stem, out in (
            ("lidar_bev", self.lidar),
            ("semantic", self.semantic),
            ("depth", self.depth),
            ("bev_semantic", self.bev_semantic),
        ):
            self.current_member = name = f"{stem}{sfx}.lz4"
            out[i] = _lz4(members[name])
        self.current_member = name = f"boxes{sfx}.npy"
        boxes = _npy(members[name])
        if boxes.ndim != 2 or boxes.shape[0] > MAX_NUM_BBOXES or boxes.shape[1] != NUM_BOX_FIELDS:
            raise ValueError(f"shape {boxes.shape}, expected (<= {MAX_NUM_BBOXES}, {NUM_BOX_FIELDS})")
        self.boxes[i] = 0.0
        self.boxes[i, : boxes.shape[0]] = boxes
        self.num_boxes[i] = boxes.shape[0]
        self.current_member = name = f"radar{sfx}.npy"
        self._fill_radar(i, _npy(members[name]))
        self.current_member = name = f"radar_detections{sfx}.npy"
        detections = _npy(members[name])
        if detections.shape != self.radar_detections.shape[1:]:
            raise ValueError(f"shape {detections.shape}, expected {self.radar_detections.shape[1:]}")
        self.radar_detections[i] = detections
        self.current_member = name = "targets.json"
        self._fill_targets(i, json.loads(bytes(members[name])), perturbated)

    def _fill_radar(self, i: int, points: np.ndarray) -> None:
        if points.ndim != 2 or points.shape[1] != 5:
            raise ValueError(f"shape {points.shape}, expected (n, 5)")
        self.radar[i] = 0.0
        if not points.shape[0]:
            return
        sensor = points[:, 4].astype(np.intp)
        if (sensor[1:] < sensor[:-1]).any():  # shards store points grouped by sensor; sort otherwise
            order = np.argsort(sensor, kind="stable")
            sensor, points = sensor[order], points[order]
        ends = np.searchsorted(sensor, _SENSOR_IDS, side="right").tolist()
        if sensor[0] < 0 or ends[-1] != sensor.shape[0]:
            raise ValueError(f"sensor ids outside 0..{NUM_RADAR_SENSORS - 1}")
        start = 0
        for sensor_id, end in enumerate(ends):
            if end - start > MAX_RADAR_POINTS_PER_SENSOR:
                raise ValueError(
                    f"{end - start} points for sensor {sensor_id} (max {MAX_RADAR_POINTS_PER_SENSOR})"
                )
            row = sensor_id * MAX_RADAR_POINTS_PER_SENSOR
            self.radar[i, row : row + end - start] = points[start:end]
            start = end

    def _fill_targets(self, i: int, targets: dict, perturbated: bool) -> None:
        geo = targets["perturbated" if perturbated else "normal"]
        flat = [
            *geo["target_point"],
            *geo["target_point_previous"],
            *geo["target_point_next"],
            *geo["future_yaws_rad"],
            targets["speed_mps"],
            targets["target_speed_mps"],
        ]
        for point in geo["future_waypoints"]:
            flat.extend(point)
        for point in geo["route"]:
            flat.extend(point)
        values = np.array(flat, dtype=np.float32)  # one conversion instead of one per field
        if values.shape[0] != _NUM_TARGET_VALUES:
            raise ValueError(
                f"{values.shape[0]} numbers, expected {_NUM_TARGET_VALUES} (8 waypoints, 10 route points)"
            )
        self.points[i].flat = values[:6]
        self.yaws[i] = values[6:14]
        self.scalars[i] = values[14:16]
        self.waypoints[i].flat = values[16:32]
        self.route[i].flat = values[32:]
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
        """Wrap the arrays as tensors (no copy except the float conversions of LiDAR and depth)."""
        t = torch.from_numpy
        lidar = np.divide(self.lidar[:, None], np.float32(LIDAR_HIST_MAX_COUNT), dtype=np.float32)  # one pass
        depth = np.multiply(self.depth, np.float32(DEPTH_MAX_M / 255.0), dtype=np.float32)
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
