"""Perception heads: backbone features → perspective semantics/depth, BEV semantics, CenterNet, radar.

All heads return raw logits / regressions; losses live in `losses.py`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lead_stream.core.constants import (
    MAX_SPEED_MPS,
    MAX_X_M,
    MAX_Y_M,
    MIN_X_M,
    NUM_BEV_SEMANTIC_CLASSES,
    NUM_BOX_CLASSES,
    NUM_RADAR_QUERIES,
    NUM_RADAR_SENSORS,
    NUM_YAW_BINS,
)
from lead_stream.model.backbone import patch_norms_fp32

HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ≈ 0.1, the usual CenterNet initialisation


class PerspectiveDecoder(nn.Module):
    """Image features (B, C4, h, w) at stride 32 → (B, out_channels, H, W) at the model's image size."""

    def __init__(
        self, in_channels: int, channels: tuple[int, int, int], out_channels: int, image_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        c0, c1, c2 = channels
        self.conv0 = nn.Conv2d(in_channels, c0, 3, 1, 1)
        self.conv1 = nn.Conv2d(c0, c1, 3, 1, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 1, 1)
        self.out = nn.Conv2d(c2, out_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv0(features))
        x = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
        x = F.relu(self.conv1(x))
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        x = F.relu(self.conv2(x))
        return self.out(x)  # (B, out_channels, H, W)


class BevSemanticHead(nn.Module):
    """BEV grid (B, G, 80, 96) → (B, 13, X, Y) logits at the model's BEV size."""

    def __init__(self, channels: int, bev_size: tuple[int, int]) -> None:
        super().__init__()
        self.bev_size = tuple(bev_size)
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.out = nn.Conv2d(channels, NUM_BEV_SEMANTIC_CLASSES, 1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        logits = self.out(F.relu(self.conv(grid)))
        if tuple(logits.shape[-2:]) != self.bev_size:
            logits = F.interpolate(logits, size=self.bev_size, mode="bilinear", align_corners=False)
        return logits


class CenterNetHead(nn.Module):
    """BEV grid (B, G, 80, 96) → heatmap 8, wh 2, offset 2, yaw class 12, yaw res 1, velocity 1, brake 2."""

    OUTPUTS: ClassVar[dict[str, int]] = {
        "heatmap": NUM_BOX_CLASSES,
        "wh": 2,
        "offset": 2,
        "yaw_class": NUM_YAW_BINS,
        "yaw_res": 1,
        "velocity": 1,
        "brake": 2,
    }

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Conv2d(channels, channels, 3, 1, 1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channels, size, 1),
                )
                for name, size in self.OUTPUTS.items()
            }
        )
        nn.init.constant_(self.heads["heatmap"][-1].bias, HEATMAP_PRIOR_BIAS)

    def forward(self, grid: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"center_net_{name}": head(grid) for name, head in self.heads.items()}


def sine_embedding(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., 2) coordinates in roughly [-1, 1] → (..., dim) sine/cosine features (dim divisible by 4)."""
    num_freq = dim // 4
    freqs = 2.0 ** torch.arange(num_freq, device=xy.device, dtype=torch.float32) * torch.pi
    angles = xy.float()[..., None] * freqs  # (..., 2, F)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (..., 2, 2F)
    return emb.flatten(-2)  # (..., 4F)


def grid_positions(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(h*w, 2) normalised (x, y) in [-1, 1] of a feature map's cells, row-major."""
    ys = torch.linspace(-1, 1, h, device=device)
    xs = torch.linspace(-1, 1, w, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=-1)


def transformer_decoder(
    dim: int, num_heads: int, ff_dim: int, num_layers: int, dropout: float
) -> nn.TransformerDecoder:
    """Post-norm GELU decoder stack (batch first) with fp32 LayerNorms."""
    layer = nn.TransformerDecoderLayer(dim, num_heads, ff_dim, dropout, activation="gelu", batch_first=True)
    return patch_norms_fp32(nn.TransformerDecoder(layer, num_layers))


class RadarDetector(nn.Module):
    """Simplified LEAD radar detector: 20 learned queries over BEV, radar point and speed tokens.

    Outputs (B, 20, 4): x, y in metres (inside the BEV box), v in [0, 25] m/s, validity logit. Simplification
    vs LEAD: radar tokens are an MLP of the point itself (no BEV feature sampling); the loss matches greedily.
    """

    def __init__(
        self, in_channels: int, dim: int, num_heads: int, ff_dim: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.dim = dim
        self.bev_proj = nn.Conv2d(in_channels, dim, 1)
        self.point_mlp = nn.Sequential(
            nn.Linear(4 + NUM_RADAR_SENSORS, ff_dim), nn.ReLU(inplace=True), nn.Linear(ff_dim, dim)
        )
        self.speed_proj = nn.Linear(1, dim)
        self.queries = nn.Parameter(torch.randn(NUM_RADAR_QUERIES, dim) * 0.02)
        self.decoder = transformer_decoder(dim, num_heads, ff_dim, num_layers, dropout)
        self.out = nn.Linear(dim, 4)

    def forward(
        self, bev_features: torch.Tensor, radar: torch.Tensor, speed_mps: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        B, _, h, w = bev_features.shape
        bev = self.bev_proj(bev_features).flatten(2).transpose(1, 2)  # (B, h*w, D)
        bev = bev + sine_embedding(grid_positions(h, w, bev.device), self.dim).to(bev.dtype)
        xy = radar[..., :2].float()
        xy_norm = torch.stack(
            [(xy[..., 0] - (MIN_X_M + MAX_X_M) / 2) / ((MAX_X_M - MIN_X_M) / 2), xy[..., 1] / MAX_Y_M], dim=-1
        )  # (B, P, 2)
        sensor = F.one_hot(radar[..., 4].long().clamp(0, NUM_RADAR_SENSORS - 1), NUM_RADAR_SENSORS).float()
        point_in = torch.cat(
            [xy_norm, radar[..., 2:3].float() / 4.0, radar[..., 3:4].float() / MAX_SPEED_MPS, sensor], dim=-1
        )  # (B, P, 8)
        points = self.point_mlp(point_in) + sine_embedding(xy_norm, self.dim).to(bev.dtype)  # (B, P, D)
        speed = self.speed_proj(speed_mps.float()[:, None, None] / MAX_SPEED_MPS)  # (B, 1, D)
        memory = torch.cat([bev, speed, points], dim=1)
        padding = torch.zeros(memory.shape[:2], dtype=torch.bool, device=memory.device)
        padding[:, h * w + 1 :] = radar[..., :4].abs().sum(-1) == 0  # zero rows = padding
        queries = self.queries[None].expand(B, -1, -1)
        features = self.decoder(queries, memory, memory_key_padding_mask=padding)  # (B, 20, D)
        raw = self.out(features).float()
        x = (MIN_X_M + MAX_X_M) / 2 + (MAX_X_M - MIN_X_M) / 2 * torch.tanh(raw[..., 0])
        y = MAX_Y_M * torch.tanh(raw[..., 1])
        v = MAX_SPEED_MPS / 2 * (1 + torch.tanh(raw[..., 2]))
        return {"radar_detections": torch.stack([x, y, v, raw[..., 3]], dim=-1), "radar_features": features}
