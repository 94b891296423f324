"""LEAD's perception heads with LEAD's module names: image features → semantics / depth, BEV grid → BEV
semantics and CenterNet maps, BEV features + radar points → 20 radar detections.

Shapes (B = batch): image features (B, 512, 12, 36) → `PerspectiveDecoder` (B, C, 384, 1152) (depth:
(B, 384, 1152) metres, raw, no squashing); BEV grid (B, 64, 80, 96) → `BEVDecoder` (B, 13, 320, 384) and
`CenterNetDecoder` heatmap logits 8, wh 2, offset 2, yaw class 12, yaw residual 1, velocity 1 on 80 x 96;
BEV features (B, 512, 10, 12) + radar (B, 300, 5) + speed (B,) → `RadarDetector` features (B, 20, 256)
and detections (B, 20, 4) [x m, y m, v m/s, validity logit].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    MAX_SPEED_MPS,
    MAX_X_M,
    MAX_Y_M,
    MIN_X_M,
    MIN_Y_M,
    NUM_RADAR_QUERIES,
    NUM_RADAR_SENSORS,
    NUM_YAW_BINS,
)
from lead_stream.model.lead_backbone import BEV_FEATURE_CHANNELS, LIDAR_ANCHORS

IMAGE_SIZE = (384, 1152)  # LEAD final_image_height, final_image_width (3 cameras)


def conv3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1)


class PerspectiveDecoder(nn.Module):
    """Stride-32 image features → full-resolution map: deconv1, x8 bilinear, deconv2, x4 bilinear, deconv3."""

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.deconv1 = nn.Sequential(conv3(in_channels, c0), nn.ReLU(True), conv3(c0, c1), nn.ReLU(True))
        self.deconv2 = nn.Sequential(conv3(c1, c2), nn.ReLU(True), conv3(c2, c2), nn.ReLU(True))
        self.deconv3 = nn.Sequential(conv3(c2, c2), nn.ReLU(True), conv3(c2, out_channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.deconv1(features), scale_factor=8, mode="bilinear", align_corners=False)
        x = F.interpolate(self.deconv2(x), scale_factor=4, mode="bilinear", align_corners=False)
        x = self.deconv3(x)
        if tuple(x.shape[2:]) != IMAGE_SIZE:
            x = F.interpolate(x, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
        return x  # (B, C, 384, 1152)


class BEVDecoder(nn.Module):
    """(B, 64, 80, 96) grid → (B, classes, 320, 384) logits: 3x3 conv, ReLU, 1x1 conv (no bias), upsample."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        c = BEV_FEATURE_CHANNELS
        self.net = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=(3, 3), stride=1, padding=(1, 1), bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_classes, kernel_size=(1, 1), stride=1, padding=0, bias=False),
            nn.Upsample(size=(BEV_HEIGHT_PX, BEV_WIDTH_PX), mode="bilinear", align_corners=False),
        )

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.net(grid)


def _head(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        conv3(in_channels, in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, out_channels, 1)
    )


class CenterNetDecoder(nn.Module):
    """CenterNet heads on the (B, 64, 80, 96) grid; returns `center_net_<name>` maps (heatmap as logits)."""

    def __init__(self, num_classes: int, *, velocity: bool = True) -> None:
        super().__init__()
        c = BEV_FEATURE_CHANNELS
        self.heatmap_head = _head(c, num_classes)
        self.wh_head = _head(c, 2)
        self.offset_head = _head(c, 2)
        self.yaw_class_head = _head(c, NUM_YAW_BINS)
        self.yaw_res_head = _head(c, 1)
        self.velocity_head = _head(c, 1) if velocity else None

    def forward(self, grid: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {
            "center_net_heatmap": self.heatmap_head(grid),
            "center_net_wh": self.wh_head(grid),
            "center_net_offset": self.offset_head(grid),
            "center_net_yaw_class": self.yaw_class_head(grid),
            "center_net_yaw_res": self.yaw_res_head(grid),
        }
        if self.velocity_head is not None:
            out["center_net_velocity"] = self.velocity_head(grid)
        return out


def sine_embedding_unit(points: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., 2) (x, y) in [0, 1] → (..., dim) DAB-DETR sine embedding, y half first (LEAD's
    `gen_sineembed_for_position`)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=points.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)

    def embed(v: torch.Tensor) -> torch.Tensor:
        pos = (v * (2 * math.pi))[..., None] / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((embed(points[..., 1]), embed(points[..., 0])), dim=-1)


def unit_bev(points: torch.Tensor) -> torch.Tensor:
    """(..., 2) ego-frame metres → [0, 1] over the BEV box (x over MIN_X..MAX_X, y over MIN_Y..MAX_Y)."""
    x = (points[..., 0] - MIN_X_M) / (MAX_X_M - MIN_X_M)
    y = (points[..., 1] - MIN_Y_M) / (MAX_Y_M - MIN_Y_M)
    return torch.stack([x, y], dim=-1)


def bev_grid_sample(bev: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) features sampled bilinearly at (B, N, 2) metre points → (B, N, D).

    Reproduces LEAD's `bev_grid_sample`, including its axis order (y → grid u, x → grid v).
    """
    u = 2 * (points[..., 1] - MIN_Y_M) / (MAX_Y_M - MIN_Y_M) - 1
    v = 2 * (points[..., 0] - MIN_X_M) / (MAX_X_M - MIN_X_M) - 1
    grid = torch.stack([u, v], dim=-1)[:, :, None]  # (B, N, 1, 2)
    sampled = F.grid_sample(bev, grid.to(bev.dtype), mode="bilinear", align_corners=True)  # (B, D, N, 1)
    return sampled.squeeze(-1).permute(0, 2, 1)


def transformer_decoder(
    dim: int, heads: int, ff_dim: int, layers: int, dropout: float
) -> nn.TransformerDecoder:
    """Post-norm GELU TransformerDecoder (batch first) with a final LayerNorm, as LEAD builds it."""
    layer = nn.TransformerDecoderLayer(
        d_model=dim,
        nhead=heads,
        dim_feedforward=ff_dim,
        dropout=dropout,
        activation=nn.GELU(),
        batch_first=True,
    )
    return nn.TransformerDecoder(layer, num_layers=layers, norm=nn.LayerNorm(dim))


class RadarDetector(nn.Module):
    """LEAD's radar detector: 20 queries over BEV tokens, an ego-speed token and 300 radar-point tokens."""

    def __init__(
        self,
        bev_channels: int,
        *,
        dim: int,
        heads: int,
        ff_dim: int,
        layers: int,
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.bev_proj = nn.Conv2d(bev_channels, dim, kernel_size=1)
        self.ego_vel_proj = nn.Linear(1, dim)
        self.radar_point_tokenizer = nn.Sequential(
            nn.Linear(dim + 1 + NUM_RADAR_SENSORS, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
        self.bev_pos_embed = nn.Parameter(torch.zeros(1, LIDAR_ANCHORS[0] * LIDAR_ANCHORS[1], dim))
        self.ego_vel_pos_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Parameter(torch.zeros(1, NUM_RADAR_QUERIES, dim))
        self.tf = transformer_decoder(dim, heads, ff_dim, layers, dropout)
        nn.init.xavier_uniform_(self.q)
        self.state_decoder = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3)
        )
        self.label_decoder = nn.Linear(dim, 1)

    def tokenize(self, bev: torch.Tensor, radar: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) projected BEV + (B, P, 5) radar [x, y, z, v, sensor] → (B, P, D) point tokens."""
        pos = radar[..., :2]
        sensor = F.one_hot(radar[..., 4].long(), NUM_RADAR_SENSORS).to(bev.dtype)
        features = torch.cat([bev_grid_sample(bev, pos), radar[..., 3:4] / MAX_SPEED_MPS, sensor], dim=-1)
        tokens = self.radar_point_tokenizer(features)
        return tokens + sine_embedding_unit(unit_bev(pos), self.dim).to(tokens.dtype)

    def forward(
        self, bev_features: torch.Tensor, radar: torch.Tensor, speed_mps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        radar = radar.float()
        bev = self.bev_proj(bev_features)  # (B, D, 10, 12)
        ego = self.ego_vel_proj(speed_mps.float().reshape(-1, 1) / MAX_SPEED_MPS).unsqueeze(1)  # (B, 1, D)
        points = self.tokenize(bev, radar)  # (B, 300, D)
        bev_tokens = bev.flatten(2).permute(0, 2, 1) + self.bev_pos_embed
        kv = torch.cat([bev_tokens, ego + self.ego_vel_pos_embed, points.to(bev_tokens.dtype)], dim=1)
        features = self.tf(self.q.repeat(kv.shape[0], 1, 1), kv)  # (B, 20, D)
        state = self.state_decoder(features)  # (B, 20, 3)
        logits = self.label_decoder(features)  # (B, 20, 1)
        x = torch.tanh(state[..., 0]) * (MAX_X_M - MIN_X_M) / 2 + (MAX_X_M + MIN_X_M) / 2
        y = torch.tanh(state[..., 1]) * (MAX_Y_M - MIN_Y_M) / 2 + (MAX_Y_M + MIN_Y_M) / 2
        v = (torch.tanh(state[..., 2]) + 1) / 2 * MAX_SPEED_MPS
        return features, torch.cat([torch.stack([x, y, v], dim=-1), logits], dim=-1)
