"""LEAD's planning decoder with LEAD's module names: BEV features + status + radar queries → route,
waypoints and target speed.

Context = `dimension_adapter` (1x1 conv 512 → 256) of the (B, 512, 10, 12) BEV features + a normalised 2-D
sine embedding (120 tokens), then the status tokens + `status_pos_embedding`: speed / 25, command one-hot,
target point, previous and next target point (each / [200, 50], one shared `tp_encoder`) and the 20 radar
query features (`radar_encoder` + sine embedding of their predicted x, y) — 25 status tokens, 145 in all.
19 learned queries (10 route, 8 waypoints, 1 target speed) pass a 6-layer post-norm GELU TransformerDecoder
with a final LayerNorm; route and waypoints are cumulative sums of per-query (dx, dy), the target speed is
an MLP to 8 logits whose softmax expectation over the class speeds is the scalar.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lead_stream.core.constants import (
    MAX_SPEED_MPS,
    NUM_COMMANDS,
    NUM_RADAR_QUERIES,
    NUM_ROUTE_POINTS,
    NUM_WAYPOINTS,
    TARGET_POINT_NORMALIZATION,
    TARGET_SPEED_CLASSES_MPS,
)
from lead_stream.model.lead_heads import sine_embedding_unit, transformer_decoder, unit_bev

NUM_PLAIN_STATUS_TOKENS = 5  # speed, command, target_point, target_point_previous, target_point_next


def sine_grid_embedding(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """(1, dim, h, w) DETR sine embedding of a feature grid, normalised to 2π (LEAD's PositionEmbeddingSine)."""
    feats = dim // 2
    ones = torch.ones((1, h, w), device=device)
    eps, scale = 1e-6, 2 * math.pi
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(feats, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)

    def embed(v: torch.Tensor) -> torch.Tensor:
        pos = v[..., None] / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(3)

    return torch.cat((embed(y), embed(x)), dim=3).permute(0, 3, 1, 2)


class PlanningContextEncoder(nn.Module):
    """(BEV features, status, radar queries) → (B, 120 + 25, 256) context tokens."""

    def __init__(self, bev_channels: int, *, dim: int, radar_dim: int | None) -> None:
        super().__init__()
        self.dim = dim
        self.velocity_encoder = nn.Sequential(nn.Linear(1, dim))
        self.command_encoder = nn.Sequential(nn.Linear(NUM_COMMANDS, dim))
        self.tp_encoder = nn.Linear(2, dim)
        num_status = NUM_PLAIN_STATUS_TOKENS
        self.radar_encoder: nn.Linear | None = None
        if radar_dim is not None:
            num_status += NUM_RADAR_QUERIES
            self.radar_encoder = nn.Linear(radar_dim, dim)
        self.status_pos_embedding = nn.Parameter(torch.zeros(1, num_status, dim))
        self.dimension_adapter = nn.Conv2d(bev_channels, dim, kernel_size=1)
        nn.init.uniform_(self.status_pos_embedding)
        self.register_buffer("tp_scale", torch.tensor(TARGET_POINT_NORMALIZATION), persistent=False)

    def forward(
        self,
        bev_features: torch.Tensor,
        *,
        speed_mps: torch.Tensor,
        command: torch.Tensor,
        target_points: torch.Tensor,
        radar_features: torch.Tensor | None,
        radar_detections: torch.Tensor | None,
    ) -> torch.Tensor:
        b = bev_features.shape[0]
        status = [
            self.velocity_encoder(speed_mps.float().reshape(-1, 1) / MAX_SPEED_MPS).reshape(b, 1, self.dim),
            self.command_encoder(command.float()).reshape(b, 1, self.dim),
            self.tp_encoder(target_points.float() / self.tp_scale),  # (B, 3, D)
        ]
        if self.radar_encoder is not None and radar_features is not None and radar_detections is not None:
            radar = self.radar_encoder(radar_features)  # (B, 20, D)
            radar = radar + sine_embedding_unit(unit_bev(radar_detections[..., :2].float()), self.dim).to(
                radar.dtype
            )
            status.append(radar)
        status_tokens = torch.cat([s.to(status[-1].dtype) for s in status], dim=1) + self.status_pos_embedding
        context = self.dimension_adapter(bev_features)  # (B, D, h, w)
        context = context + sine_grid_embedding(*context.shape[2:], self.dim, context.device).to(
            context.dtype
        )
        context = context.flatten(2).permute(0, 2, 1)  # (B, h*w, D)
        return torch.cat([context, status_tokens.to(context.dtype)], dim=1)


class PlanningDecoder(nn.Module):
    """→ route (B, 10, 2), waypoints (B, 8, 2), target-speed logits (B, 8) and scalar (B,) m/s."""

    def __init__(
        self,
        bev_channels: int,
        *,
        dim: int,
        heads: int,
        layers: int,
        ff_dim: int,
        dropout: float,
        radar_dim: int | None,
    ) -> None:
        super().__init__()
        self.planning_context_encoder = PlanningContextEncoder(bev_channels, dim=dim, radar_dim=radar_dim)
        self.query = nn.Parameter(torch.zeros(1, NUM_ROUTE_POINTS + NUM_WAYPOINTS + 1, dim))
        self.transformer_decoder = transformer_decoder(dim, heads, ff_dim, layers, dropout)
        self.route_decoder = nn.Linear(dim, 2)
        self.wp_decoder = nn.Linear(dim, 2)
        self.target_speed_decoder = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, len(TARGET_SPEED_CLASSES_MPS))
        )
        nn.init.uniform_(self.query)
        self.register_buffer("speed_classes", torch.tensor(TARGET_SPEED_CLASSES_MPS), persistent=False)

    def forward(
        self,
        bev_features: torch.Tensor,
        *,
        speed_mps: torch.Tensor,
        command: torch.Tensor,
        target_points: torch.Tensor,
        radar_features: torch.Tensor | None,
        radar_detections: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        context = self.planning_context_encoder(
            bev_features,
            speed_mps=speed_mps,
            command=command,
            target_points=target_points,
            radar_features=radar_features,
            radar_detections=radar_detections,
        )
        queries = self.transformer_decoder(self.query.repeat(context.shape[0], 1, 1), context)  # (B, 19, D)
        route = torch.cumsum(self.route_decoder(queries[:, :NUM_ROUTE_POINTS]), 1)
        waypoints = torch.cumsum(
            self.wp_decoder(queries[:, NUM_ROUTE_POINTS : NUM_ROUTE_POINTS + NUM_WAYPOINTS]), 1
        )
        logits = self.target_speed_decoder(queries[:, NUM_ROUTE_POINTS + NUM_WAYPOINTS])
        speed = (torch.softmax(logits.float(), dim=-1) * self.speed_classes).sum(-1)
        return {
            "route": route,
            "waypoints": waypoints,
            "target_speed_logits": logits,
            "target_speed_mps": speed,
        }
