"""Model outputs and `Batch` labels → the plain tensors every metric reads (`Predictions`, `Labels`).

This is the ONE place that knows the model's output dict: `predictions_from_outputs` maps its keys and
semantics (logits vs probabilities, grid cells vs metres) to `Predictions`; when the model changes, only this
function changes. Metrics never see the model or the Batch. B = per-rank batch size; geometry in ego metres
(x forward, y right), BEV rasters rows = y, cols = x (`core.constants`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lead_stream.core.constants import (
    MAX_X_M,
    MAX_Y_M,
    MIN_X_M,
    MIN_Y_M,
    PIXELS_PER_M,
    TARGET_SPEED_CLASSES_MPS,
    BoxField,
)
from lead_stream.evaluate.detection import decode_box_centres

LEAD_TOP_K_BOXES = 100  # LEAD's top_k_center_keypoints
LEAD_MAX_POOL_KERNEL = 3  # LEAD's center_net_max_pooling_kernel (local maxima of the heatmap)


def _rows(value: object, mask: torch.Tensor) -> object:
    return value[mask] if isinstance(value, torch.Tensor) else value


@dataclass
class Predictions:
    """What a model predicted for B samples; None where the model has no such head."""

    waypoints: torch.Tensor | None = None  # (B, 8, 2) float32 metres, 0.25 s apart
    route: torch.Tensor | None = None  # (B, 10, 2) float32 metres
    target_speed_logits: torch.Tensor | None = None  # (B, 8) scores over TARGET_SPEED_CLASSES_MPS
    bev_semantic: torch.Tensor | None = None  # (B, 13, X, Y) class scores, any resolution
    semantic: torch.Tensor | None = None  # (B, 10, H, W) class scores, any resolution
    depth_m: torch.Tensor | None = None  # (B, H, W) float32 metres, any resolution
    boxes: torch.Tensor | None = None  # (B, K, 4) float32 [x_m, y_m, score in [0, 1], class]
    radar: torch.Tensor | None = None  # (B, Q, 3) float32 [x_m, y_m, score in [0, 1]]

    def rows(self, mask: torch.Tensor) -> Predictions:
        """The samples where `mask` (B,) bool is true."""
        return Predictions(**{f.name: _rows(getattr(self, f.name), mask) for f in dataclasses.fields(self)})


@dataclass
class Labels:
    """The expert's labels for B samples, in the units of `Predictions`."""

    waypoints: torch.Tensor  # (B, 8, 2) float32 metres
    planning_valid: torch.Tensor  # (B,) bool: all 8 waypoints are real future positions
    route: torch.Tensor  # (B, 10, 2) float32 metres
    target_speed_class: torch.Tensor  # (B,) int64 index into TARGET_SPEED_CLASSES_MPS (brake → 0)
    bev_semantic: torch.Tensor  # (B, 320, 384) int64 BevSemanticClass
    semantic: torch.Tensor  # (B, 384, 1152) int64 SemanticClass
    depth_m: torch.Tensor  # (B, 96, 288) float32 metres (0 = no depth)
    boxes: torch.Tensor  # (B, N, 3) float32 [x_m, y_m, class]
    box_valid: torch.Tensor  # (B, N) bool
    radar: torch.Tensor  # (B, R, 2) float32 [x_m, y_m]
    radar_valid: torch.Tensor  # (B, R) bool

    def rows(self, mask: torch.Tensor) -> Labels:
        """The samples where `mask` (B,) bool is true."""
        return Labels(**{f.name: _rows(getattr(self, f.name), mask) for f in dataclasses.fields(self)})


def target_speed_class(speed_mps: torch.Tensor, brake: torch.Tensor) -> torch.Tensor:
    """(B,) expert target speeds → the nearest TARGET_SPEED_CLASSES_MPS index (ties → lower; brake → 0).

    This is the argmax of LEAD's two-hot target-speed label.
    """
    classes = torch.tensor(TARGET_SPEED_CLASSES_MPS, device=speed_mps.device)
    nearest = (speed_mps.float()[:, None] - classes[None]).abs().argmin(dim=1)
    return torch.where(brake.bool(), torch.zeros_like(nearest), nearest)


@torch.no_grad()
def labels_from_batch(batch: object) -> Labels:
    """A dense `Batch` (after `batch.to(device)`) → `Labels`."""
    boxes = batch.boxes.float()  # (B, N, 9) BoxField columns in BEV pixels
    n = boxes.shape[1]
    box_valid = torch.arange(n, device=boxes.device)[None] < batch.num_boxes.to(boxes.device)[:, None]
    box_m = torch.stack(
        [
            boxes[..., BoxField.X] / PIXELS_PER_M + MIN_X_M,
            boxes[..., BoxField.Y] / PIXELS_PER_M + MIN_Y_M,
            boxes[..., BoxField.CLASS].round(),
        ],
        dim=-1,
    )
    inside = (box_m[..., 0] >= MIN_X_M) & (box_m[..., 0] < MAX_X_M)
    inside &= (box_m[..., 1] >= MIN_Y_M) & (box_m[..., 1] < MAX_Y_M)
    radar = batch.radar_detections.float()  # (B, 20, 4) [x_m, y_m, v_mps, valid]
    return Labels(
        waypoints=batch.future_waypoints.float(),
        planning_valid=batch.planning_valid.bool(),
        route=batch.route.float(),
        target_speed_class=target_speed_class(batch.target_speed_mps, batch.brake),
        bev_semantic=batch.bev_semantic.long(),
        semantic=batch.semantic.long(),
        depth_m=batch.depth_m,
        boxes=box_m,
        box_valid=box_valid & inside,  # a centre outside the BEV area cannot be predicted
        radar=radar[..., :2],
        radar_valid=radar[..., 3] > 0.5,
    )


@torch.no_grad()
def predictions_from_outputs(outputs: Mapping[str, torch.Tensor]) -> Predictions:
    """`TFv6.forward` outputs → `Predictions` (re-point this function when the model's outputs change).

    CenterNet boxes are decoded as LEAD does (sigmoid heatmap, 3 x 3 local maxima, top 100 over classes and
    cells, centre = cell + predicted offset); one grid cell spans the BEV area / grid size (1 m on 80 x 96).
    Radar detections are (x_m, y_m, v, validity logit); the score is the logit's sigmoid.
    """
    get = outputs.get
    boxes = None
    if get("center_net_heatmap") is not None:
        boxes = decode_box_centres(
            torch.sigmoid(outputs["center_net_heatmap"].float()),
            outputs["center_net_offset"].float(),
            area_m=(MIN_X_M, MAX_X_M, MIN_Y_M, MAX_Y_M),
            top_k=LEAD_TOP_K_BOXES,
            kernel=LEAD_MAX_POOL_KERNEL,
        )
    radar = None
    if get("radar_detections") is not None:
        raw = outputs["radar_detections"].float()
        radar = torch.stack([raw[..., 0], raw[..., 1], torch.sigmoid(raw[..., 3])], dim=-1)
    return Predictions(
        waypoints=None if get("waypoints") is None else outputs["waypoints"].float(),
        route=None if get("route") is None else outputs["route"].float(),
        target_speed_logits=get("target_speed_logits"),
        bev_semantic=get("bev_semantic"),
        semantic=get("semantic"),
        depth_m=None if get("depth_m") is None else outputs["depth_m"].float(),
        boxes=boxes,
        radar=radar,
    )
