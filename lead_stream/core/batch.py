"""The typed batch that crosses the loader → trainer boundary.

B = per-rank batch size. Sizes are LEAD's CARLA-mode geometry (`constants`): stitched camera image
384 x 1152, BEV 320 x 384 (rows = y, cols = x, 4 px/m), depth at 1/4 resolution (96 x 288).
One sample = one frame in one sensor variant (normal or perturbated, chosen by the loader); every
geometric label (LiDAR, boxes, BEV, target points, waypoints, route) is already in that variant's frame.
LiDAR and depth cross as the uint8 values the shards store (1/4 of the float32 bytes, no host-side
conversion); the model scales LiDAR counts on the device (`lidar_unit`) and `Batch.depth_m` gives metres.
The rasters `lidar_bev`, `semantic` and `bev_semantic` leave the loader run-length coded (`RunCoded`, a few KB
per sample instead of 0.7 MB): `Batch.to(device)` moves the runs and expands them there, so every batch a model or
loss sees holds dense tensors; `Batch.dense()` expands in place on the host.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from lead_stream.core.constants import DEPTH_MAX_M, LIDAR_HIST_MAX_COUNT
from lead_stream.core.runs import expand_runs_torch

DEPTH_M_PER_UNIT = DEPTH_MAX_M / 255.0  # depth_u8 value v is v / 255 * 50 metres (see depth_to_m)


@dataclass
class RunCoded:
    """A batch of uint8 rasters as runs, all samples back to back in C order (`runs`); `expand()` densifies."""

    values: torch.Tensor  # (N,) uint8 run labels of all B samples, sample after sample (C order each)
    lengths: torch.Tensor  # (N,) int32 run lengths (>= 0); each sample's runs sum to prod(shape[1:])
    shape: tuple[int, ...]  # the expanded shape, (B, H, W) or (B, 1, H, W)

    def expand(self) -> torch.Tensor:
        """The dense `shape` uint8 tensor on the runs' device."""
        return expand_runs_torch(self.values, self.lengths, self.shape)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> RunCoded:
        return RunCoded(
            self.values.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
            self.shape,
        )

    def pin_memory(self) -> RunCoded:
        return RunCoded(self.values.pin_memory(), self.lengths.pin_memory(), self.shape)


def _dense(value: object) -> object:
    return value.expand() if isinstance(value, RunCoded) else value


@dataclass
class Batch:
    """Collated samples for one rank."""

    # --- sensors ---
    rgb: torch.Tensor  # (B, 3, 384, 1152) uint8, RGB, cameras stitched left→front→right
    lidar_bev: torch.Tensor | RunCoded  # (B, 1, 320, 384) uint8 point histogram counts 0..5 (clipped at 5)
    radar: (
        torch.Tensor
    )  # (B, 300, 5) float32 [x, y, z, v, sensor_id]; 75 rows per sensor, LEAD padding [0,0,0,0,id]
    speed_mps: torch.Tensor  # (B,) float32 ego speed
    # --- perception labels ---
    semantic: torch.Tensor | RunCoded  # (B, 384, 1152) uint8, SemanticClass 0..9 (RunCoded from the loader)
    depth_u8: torch.Tensor  # (B, 96, 288) uint8, metres = v / 255 * 50 (0..50); see depth_m
    bev_semantic: torch.Tensor | RunCoded  # (B, 320, 384) uint8, BevSemanticClass 0..12 (hdmap + occupancy)
    boxes: torch.Tensor  # (B, 90, 9) float32, BoxField columns in BEV pixels, rows >= num_boxes are 0
    num_boxes: torch.Tensor  # (B,) int64 valid rows of `boxes` (padding never makes a target)
    radar_detections: torch.Tensor  # (B, 20, 4) float32 [x_m, y_m, v_mps, valid]
    # --- navigation inputs ---
    target_point: torch.Tensor  # (B, 2) float32 ego frame metres (next route keypoint)
    target_point_previous: torch.Tensor  # (B, 2) float32
    target_point_next: torch.Tensor  # (B, 2) float32
    command: torch.Tensor  # (B, 6) float32 one-hot RoadOption of the previous keypoint
    next_command: torch.Tensor  # (B, 6) float32 one-hot
    # --- planning labels (post-training) ---
    future_waypoints: torch.Tensor  # (B, 8, 2) float32 ego positions 0.25 s apart (2 s horizon), metres
    future_yaws_rad: torch.Tensor  # (B, 8) float32 yaw change at each waypoint
    route: torch.Tensor  # (B, 10, 2) float32 route points, 1 m apart from 2.5 m ahead
    target_speed_mps: torch.Tensor  # (B,) float32 expert target speed
    brake: torch.Tensor  # (B,) bool expert brake
    planning_valid: torch.Tensor  # (B,) bool: the frame has >= 40 future steps (all 8 waypoints are real)
    # --- identity ---
    perturbated: torch.Tensor  # (B,) bool: the perturbated sensor variant was served
    frame_idx: torch.Tensor  # (B,) int64 frame number in its route
    bucket_idx: torch.Tensor  # (B,) int64 index of the bucket the sample was drawn for
    route_id: list[str]  # len B, "<Scenario>/<route_dir>"

    @property
    def depth_m(self) -> torch.Tensor:
        """(B, 96, 288) float32 metres, 0..50, computed from `depth_u8` on its device."""
        return depth_to_m(self.depth_u8)

    @property
    def size(self) -> int:
        """B, the number of samples."""
        return int(self.speed_mps.shape[0])

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """A copy with every tensor moved to `device` and run-coded rasters expanded there (lists stay)."""
        moved = {
            f.name: (
                _dense(value.to(device, non_blocking=non_blocking))
                if isinstance(value, (torch.Tensor, RunCoded))
                else value
            )
            for f in dataclasses.fields(self)
            for value in [getattr(self, f.name)]
        }
        return Batch(**moved)

    def dense(self) -> Batch:
        """This batch with run-coded rasters expanded on their device (a no-op when none is coded)."""
        return Batch(**{f.name: _dense(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def pin_memory(self) -> Batch:
        """Called by torch's DataLoader when pin_memory=True."""
        pinned = {
            f.name: (value.pin_memory() if isinstance(value, (torch.Tensor, RunCoded)) else value)
            for f in dataclasses.fields(self)
            for value in [getattr(self, f.name)]
        }
        return Batch(**pinned)


def depth_to_m(depth_u8: torch.Tensor) -> torch.Tensor:
    """uint8 depth → float32 metres as LEAD's `decode_depth_8bit`: (float32(v) / 255) * 50, in float32."""
    return depth_u8.float() / 255.0 * DEPTH_MAX_M


def lidar_unit(lidar_bev: torch.Tensor) -> torch.Tensor:
    """uint8 LiDAR counts 0..5 → float32 in [0, 1] (count / 5), the network's input scale."""
    return lidar_bev.float() / LIDAR_HIST_MAX_COUNT


BATCH_TENSOR_FIELDS = tuple(f.name for f in dataclasses.fields(Batch) if f.name != "route_id")
