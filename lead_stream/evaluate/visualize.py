"""One sample's labels and predictions → RGB images for TensorBoard (BEV panel and camera panel).

BEV panel (left → right): LiDAR with target boxes and target (green) / predicted (red) waypoints and route,
target BEV semantics, predicted BEV semantics, target CenterNet heatmap, predicted heatmap. Camera panel:
the stitched image with waypoints projected into the front camera, over target / predicted semantics.
Plain numpy + Pillow; images are (H, W, 3) uint8.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from lead_stream.core.batch import lidar_unit
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    CAMERA_FOV_DEG,
    CAMERA_HEIGHT_PX,
    CAMERA_POSITIONS_M,
    CAMERA_WIDTH_PX,
    MIN_X_M,
    MIN_Y_M,
    PIXELS_PER_M,
    BoxField,
)

PALETTE = np.array(
    [
        [0, 0, 0],
        [128, 64, 128],
        [255, 255, 255],
        [220, 20, 60],
        [0, 0, 142],
        [255, 0, 0],
        [255, 128, 0],
        [0, 128, 128],
        [255, 0, 255],
        [119, 11, 32],
        [0, 255, 0],
        [255, 255, 0],
        [255, 80, 80],
    ],
    dtype=np.uint8,
)
TARGET_COLOR = (0, 255, 0)
PREDICTION_COLOR = (255, 40, 40)
PANEL_SCALE = 2  # BEV panels at 160 x 192


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) class ids → (H, W, 3) uint8."""
    return PALETTE[np.clip(labels, 0, len(PALETTE) - 1)]


def _heat(values: np.ndarray) -> np.ndarray:
    v = (np.clip(values, 0, 1) * 255).astype(np.uint8)
    return np.stack([v, v // 2, 255 - v], axis=-1)


def _bev_px(points_m: np.ndarray, scale: float) -> list[tuple[float, float]]:
    """Ego metres (x forward, y right) → (col, row) in a BEV panel downscaled by `scale`."""
    cols = (points_m[:, 0] - MIN_X_M) * PIXELS_PER_M / scale
    rows = (points_m[:, 1] - MIN_Y_M) * PIXELS_PER_M / scale
    return list(zip(cols.tolist(), rows.tolist()))


def _draw_points(
    draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], color: tuple[int, int, int]
) -> None:
    for col, row in points:
        draw.ellipse([col - 1.5, row - 1.5, col + 1.5, row + 1.5], fill=color)


def _box_corners(box: np.ndarray, scale: float) -> list[tuple[float, float]]:
    x, y, w, h, yaw = (box[BoxField.X], box[BoxField.Y], box[BoxField.W], box[BoxField.H], box[BoxField.YAW])
    c, s = math.cos(yaw), math.sin(yaw)
    corners = [
        (x + dx * w * c - dy * h * s, y + dx * w * s + dy * h * c)
        for dx, dy in ((1, 1), (1, -1), (-1, -1), (-1, 1))
    ]
    return [(cx / scale, cy / scale) for cx, cy in corners]


def _resize(image: np.ndarray, size: tuple[int, int], nearest: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 → size (H', W')."""
    return np.asarray(
        Image.fromarray(image).resize((size[1], size[0]), Image.NEAREST if nearest else Image.BILINEAR)
    )


@torch.no_grad()
def bev_image(
    batch: object, outputs: dict[str, torch.Tensor], heatmap_target: torch.Tensor, idx: int = 0
) -> np.ndarray:
    """BEV panel of sample `idx` (see module docstring) → (160, 960, 3) uint8."""
    size = (BEV_HEIGHT_PX // PANEL_SCALE, BEV_WIDTH_PX // PANEL_SCALE)
    lidar = (lidar_unit(batch.lidar_bev[idx, 0]).cpu().numpy() * 255).astype(np.uint8)
    lidar_rgb = _resize(np.stack([lidar] * 3, axis=-1), size, nearest=False)
    canvas = Image.fromarray(lidar_rgb)
    draw = ImageDraw.Draw(canvas)
    boxes = batch.boxes[idx, : int(batch.num_boxes[idx])].float().cpu().numpy()
    for box in boxes:
        draw.polygon(_box_corners(box, PANEL_SCALE), outline=TARGET_COLOR)
    _draw_points(draw, _bev_px(batch.future_waypoints[idx].float().cpu().numpy(), PANEL_SCALE), TARGET_COLOR)
    if "waypoints" in outputs:
        _draw_points(
            draw, _bev_px(outputs["waypoints"][idx].float().cpu().numpy(), PANEL_SCALE), PREDICTION_COLOR
        )
        _draw_points(draw, _bev_px(outputs["route"][idx].float().cpu().numpy(), PANEL_SCALE), (255, 160, 0))
    target_bev = colorize(batch.bev_semantic[idx].cpu().numpy().astype(np.int64))
    pred_bev = (  # a disabled head (model.use_bev_semantic=false, ...) leaves its panel black
        colorize(outputs["bev_semantic"][idx].argmax(0).cpu().numpy())
        if "bev_semantic" in outputs
        else np.zeros_like(target_bev)
    )
    heat_target = heatmap_target[idx].max(0).values.float().cpu().numpy()
    heat_pred = (
        torch.sigmoid(outputs["center_net_heatmap"][idx].float()).max(0).values.cpu().numpy()
        if "center_net_heatmap" in outputs
        else np.zeros_like(heat_target)
    )
    panels = [
        np.asarray(canvas),
        _resize(target_bev, size),
        _resize(pred_bev, size),
        _resize(_heat(heat_target), size),
        _resize(_heat(heat_pred), size),
    ]
    return np.concatenate(panels, axis=1)


def project_to_front_camera(points_m: np.ndarray, image_width: int) -> np.ndarray:
    """Ground points (N, 2) ego metres → (N, 2) pixel (u, v) in the stitched image (front = middle camera)."""
    cam_x, cam_y, cam_z = CAMERA_POSITIONS_M[1]
    focal = CAMERA_WIDTH_PX / (2 * math.tan(math.radians(CAMERA_FOV_DEG / 2)))
    depth = np.maximum(points_m[:, 0] - cam_x, 0.5)
    u = CAMERA_WIDTH_PX / 2 + focal * (points_m[:, 1] - cam_y) / depth
    v = CAMERA_HEIGHT_PX / 2 + focal * cam_z / depth
    offset = (image_width - CAMERA_WIDTH_PX) / 2
    return np.stack([u + offset, v], axis=-1)


@torch.no_grad()
def camera_image(batch: object, outputs: dict[str, torch.Tensor], idx: int = 0) -> np.ndarray:
    """Camera panel of sample `idx`: rgb + projected waypoints over target | predicted semantics."""
    rgb = batch.rgb[idx].permute(1, 2, 0).cpu().numpy().astype(np.uint8)  # (384, 1152, 3)
    H, W = rgb.shape[:2]
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    for key, color in (("target", TARGET_COLOR), ("pred", PREDICTION_COLOR)):
        if key == "target":
            points = batch.future_waypoints[idx].float().cpu().numpy()
        elif "waypoints" in outputs:
            points = outputs["waypoints"][idx].float().cpu().numpy()
        else:
            continue
        for u, v in project_to_front_camera(points, W):
            draw.ellipse([u - 4, v - 4, u + 4, v + 4], fill=color)
    half = (H // 2, W // 2)
    semantic_target = colorize(batch.semantic[idx].cpu().numpy().astype(np.int64))
    if "semantic" in outputs:
        pred = outputs["semantic"][idx : idx + 1].float()
        pred = F.interpolate(pred, size=(H, W), mode="nearest")[0].argmax(0).cpu().numpy()
        semantic_pred = colorize(pred)
    else:  # model.use_semantic=false
        semantic_pred = np.zeros_like(semantic_target)
    row = np.concatenate(
        [
            _resize(semantic_target, (half[0] // 2, half[1] // 2)),
            _resize(semantic_pred, (half[0] // 2, half[1] // 2)),
        ],
        axis=1,
    )
    return np.concatenate([_resize(np.asarray(canvas), half, nearest=False), row], axis=0)
