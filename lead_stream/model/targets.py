"""Packed boxes (B, 90, 9) + num_boxes → CenterNet targets on the 80 x 96 grid, in torch (LEAD §4.3).

One grid cell = 1 m (BEV pixels / 4). Each valid box puts a Gaussian (radius `max(2, int(r))`, r from
CornerNet's `gaussian_radius` with min_overlap 0.1 on the half extents) on its class channel and writes
wh / offset / yaw / velocity / brake at its centre cell. Rows >= num_boxes are padding and make no
target. LEAD does not skip its zero padding rows, so every LEAD sample with fewer than 90 boxes gets a phantom
VEHICLE box at cell (0, 0) (x = -32 m, y = -40 m; radius 2, zero size) that also counts as a centre; that
LEAD bug is off by default and reproduced with `phantom_peak=True` (train key `centernet_phantom_peak`).
As in LEAD, a centre's cell is its coordinates truncated toward zero (a centre within one cell left of or
above the grid still lands in cell 0), and when two boxes share a centre cell the later one in the array wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lead_stream.core.constants import (
    BEV_DOWN_SAMPLE_FACTOR,
    MAX_NUM_BBOXES,
    NUM_BOX_CLASSES,
    NUM_YAW_BINS,
    BoxField,
)
from lead_stream.model.backbone import GRID_SIZE

YAW_BIN_RAD = 2 * math.pi / NUM_YAW_BINS


@dataclass
class CenterNetTargets:
    """CenterNet labels for one rank's batch; H x W = 80 x 96."""

    heatmap: torch.Tensor  # (B, 8, H, W) float32 in [0, 1], exactly 1 at box centres
    wh: torch.Tensor  # (B, 2, H, W) float32 half extents in cells (= metres)
    offset: torch.Tensor  # (B, 2, H, W) float32 sub-cell remainder of the centre
    yaw_class: torch.Tensor  # (B, H, W) int64 0..11
    yaw_res: torch.Tensor  # (B, 1, H, W) float32 radians from the bin centre
    velocity: torch.Tensor  # (B, 1, H, W) float32 m/s
    brake: torch.Tensor  # (B, H, W) int64 0/1
    centre_mask: torch.Tensor  # (B, H, W) bool: a box centre is at this cell
    num_centres: (
        torch.Tensor
    )  # () float32 number of centre cells in the batch (LEAD's avg_factor before max(1))


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.1) -> torch.Tensor:
    """CornerNet's radius so that a box shifted by it keeps IoU >= min_overlap (elementwise)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def yaw_to_class(yaw_rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LEAD's angle2class: 12 bins of 30°, bin k centred on k·30°; returns (class, residual)."""
    angle = torch.remainder(yaw_rad, 2 * math.pi)
    cls = torch.floor((angle + YAW_BIN_RAD / 2) / YAW_BIN_RAD).long() % NUM_YAW_BINS
    residual = angle - cls.float() * YAW_BIN_RAD
    residual = torch.remainder(residual + math.pi, 2 * math.pi) - math.pi
    return cls, residual


def class_to_yaw(cls: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Inverse of `yaw_to_class`, wrapped to (-pi, pi]."""
    angle = cls.float() * YAW_BIN_RAD + residual
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def with_phantom_box(boxes: torch.Tensor, num_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LEAD's padding as a box: an all-zero row after the real ones of every sample with < 90 boxes.

    Args:
        boxes: (B, N, 9) packed boxes; num_boxes: (B,) valid rows.

    Returns:
        ((B, max(num_boxes') , 9) boxes, (B,) num_boxes'), num_boxes' = num_boxes + (num_boxes < 90).
    """
    num_boxes = num_boxes.to(boxes.device)
    padded = (num_boxes < MAX_NUM_BBOXES).long()
    width = max(1, int((num_boxes + padded).max())) if num_boxes.numel() else 1
    out = torch.zeros(boxes.shape[0], width, boxes.shape[2], dtype=boxes.dtype, device=boxes.device)
    keep = min(width, boxes.shape[1])
    rows = torch.arange(keep, device=boxes.device)[None, :] < num_boxes[:, None]  # (B, keep)
    out[:, :keep] = torch.where(rows[..., None], boxes[:, :keep], torch.zeros((), dtype=boxes.dtype))
    return out, num_boxes + padded


def centernet_targets(
    boxes: torch.Tensor, num_boxes: torch.Tensor, *, phantom_peak: bool = False
) -> CenterNetTargets:
    """Compute CenterNet targets from packed boxes.

    Args:
        boxes: (B, N, 9) float32 BoxField columns in BEV pixels (4 px/m); rows >= num_boxes ignored.
        num_boxes: (B,) int64 valid rows.
        phantom_peak: add LEAD's phantom VEHICLE box at cell (0, 0) to every sample with < 90 boxes.

    Returns:
        CenterNetTargets on the (80, 96) grid, same device as `boxes`.
    """
    if phantom_peak:
        boxes, num_boxes = with_phantom_box(boxes, num_boxes)
    num_used = max(1, int(num_boxes.max())) if num_boxes.numel() else 1
    boxes = boxes[:, :num_used]  # padding rows never make targets; skip them to save memory
    B, N, _ = boxes.shape
    H, W = GRID_SIZE
    device = boxes.device
    boxes = boxes.float()
    valid = torch.arange(N, device=device)[None, :] < num_boxes.to(device)[:, None]  # (B, N)
    x = boxes[..., BoxField.X] / BEV_DOWN_SAMPLE_FACTOR  # (B, N) cells
    y = boxes[..., BoxField.Y] / BEV_DOWN_SAMPLE_FACTOR
    half_w = boxes[..., BoxField.W] / BEV_DOWN_SAMPLE_FACTOR
    half_h = boxes[..., BoxField.H] / BEV_DOWN_SAMPLE_FACTOR
    cx, cy = x.trunc(), y.trunc()  # LEAD's astype(int): toward zero
    valid = valid & (cx >= 0) & (cx < W) & (cy >= 0) & (cy < H)
    cx, cy = cx.clamp(0, W - 1), cy.clamp(0, H - 1)
    cls = boxes[..., BoxField.CLASS].round().long().clamp(0, NUM_BOX_CLASSES - 1)
    radius = (
        gaussian_radius(half_h.clamp(min=0), half_w.clamp(min=0)).nan_to_num(0).floor().clamp(min=2)
    )  # (B, N)
    sigma = (2 * radius + 1) / 6
    # --- heatmap: per-box Gaussian on the full grid, max-reduced into its class channel ---
    cols = torch.arange(W, device=device, dtype=torch.float32)
    rows = torch.arange(H, device=device, dtype=torch.float32)
    dx = cols[None, None, None, :] - cx[..., None, None]  # (B, N, 1, W)
    dy = rows[None, None, :, None] - cy[..., None, None]  # (B, N, H, 1)
    inside = (dx.abs() <= radius[..., None, None]) & (dy.abs() <= radius[..., None, None])
    gauss = torch.exp(-(dx**2 + dy**2) / (2 * sigma[..., None, None] ** 2))  # (B, N, H, W)
    gauss = torch.where(inside & valid[..., None, None], gauss, torch.zeros((), device=device))
    heatmap = torch.zeros(B, NUM_BOX_CLASSES, H, W, device=device)
    index = cls[..., None, None].expand(B, N, H, W)
    heatmap = heatmap.scatter_reduce(1, index, gauss, reduce="amax", include_self=True)  # (B, 8, H, W)
    # --- regression targets at centre cells; the last box of a shared cell wins (LEAD's loop order) ---
    cell = torch.arange(B, device=device)[:, None] * (H * W) + cy.long() * W + cx.long()  # (B, N)
    row_idx = torch.arange(N, device=device).expand(B, N)
    winner = torch.full((B * H * W,), -1, device=device, dtype=torch.long)
    winner = winner.scatter_reduce(0, cell[valid], row_idx[valid], reduce="amax", include_self=True)
    keep = valid & (winner[cell] == row_idx)  # (B, N)
    flat_cell = cell[keep]
    kept = boxes[keep]  # (K, 9)
    yaw_cls, yaw_res = yaw_to_class(kept[:, BoxField.YAW])

    def scatter(values: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros(B * H * W, channels, device=device, dtype=dtype)
        out[flat_cell] = values.reshape(-1, channels).to(dtype)
        return out.view(B, H, W, channels).permute(0, 3, 1, 2)  # (B, C, H, W)

    wh = scatter(torch.stack([half_w[keep], half_h[keep]], dim=-1), 2, torch.float32)
    offset = scatter(torch.stack([x[keep] - cx[keep], y[keep] - cy[keep]], dim=-1), 2, torch.float32)
    centre_mask = torch.zeros(B * H * W, dtype=torch.bool, device=device)
    centre_mask[flat_cell] = True
    return CenterNetTargets(
        heatmap=heatmap,
        wh=wh,
        offset=offset,
        yaw_class=scatter(yaw_cls, 1, torch.long)[:, 0],
        yaw_res=scatter(yaw_res, 1, torch.float32),
        velocity=scatter(kept[:, BoxField.VELOCITY], 1, torch.float32),
        brake=scatter(kept[:, BoxField.BRAKE].round(), 1, torch.long)[:, 0],
        centre_mask=centre_mask.view(B, H, W),
        num_centres=centre_mask.sum().float(),
    )
