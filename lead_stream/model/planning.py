"""Planning decoder (post-training): BEV tokens + status tokens → waypoints, route, target-speed logits.

19 learned queries (10 route + 8 waypoints + 1 target speed) attend to the BEV features (1x1 conv + 2-D
sine position) and status tokens (speed / 25, command one-hot, three target points / [200, 50]) through a
TransformerDecoder. Route and waypoints are cumulative sums of per-query (dx, dy); the target speed is an
8-way classification over `TARGET_SPEED_CLASSES_MPS` (LEAD's `planning_decoder.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from lead_stream.core.constants import (
    MAX_SPEED_MPS,
    NUM_COMMANDS,
    NUM_ROUTE_POINTS,
    NUM_WAYPOINTS,
    TARGET_POINT_NORMALIZATION,
    TARGET_SPEED_CLASSES_MPS,
)
from lead_stream.model.heads import grid_positions, sine_embedding, transformer_decoder

NUM_STATUS_TOKENS = 5  # speed, command, target_point, target_point_previous, target_point_next


class PlanningDecoder(nn.Module):
    """(bev_features (B,C4,h,w), status) → waypoints (B,8,2), route (B,10,2), target_speed_logits (B,8)."""

    def __init__(
        self, in_channels: int, dim: int, num_heads: int, ff_dim: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.dim = dim
        self.bev_proj = nn.Conv2d(in_channels, dim, 1)
        self.speed_proj = nn.Linear(1, dim)
        self.command_proj = nn.Linear(NUM_COMMANDS, dim)
        self.target_point_proj = nn.Linear(2, dim)
        self.status_type = nn.Parameter(torch.randn(NUM_STATUS_TOKENS, dim) * 0.02)
        num_queries = NUM_ROUTE_POINTS + NUM_WAYPOINTS + 1
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.decoder = transformer_decoder(dim, num_heads, ff_dim, num_layers, dropout)
        self.route_out = nn.Linear(dim, 2)
        self.waypoint_out = nn.Linear(dim, 2)
        self.speed_out = nn.Linear(dim, len(TARGET_SPEED_CLASSES_MPS))
        self.register_buffer("tp_scale", torch.tensor(TARGET_POINT_NORMALIZATION), persistent=False)
        self.register_buffer("speed_classes", torch.tensor(TARGET_SPEED_CLASSES_MPS), persistent=False)

    def forward(
        self,
        bev_features: torch.Tensor,
        *,
        speed_mps: torch.Tensor,
        command: torch.Tensor,
        target_point: torch.Tensor,
        target_point_previous: torch.Tensor,
        target_point_next: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        B, _, h, w = bev_features.shape
        bev = self.bev_proj(bev_features).flatten(2).transpose(1, 2)  # (B, h*w, D)
        bev = bev + sine_embedding(grid_positions(h, w, bev.device), self.dim).to(bev.dtype)
        tps = torch.stack(
            [target_point, target_point_previous, target_point_next], dim=1
        ).float()  # (B, 3, 2)
        status = (
            torch.cat(
                [
                    self.speed_proj(speed_mps.float()[:, None, None] / MAX_SPEED_MPS),  # (B, 1, D)
                    self.command_proj(command.float())[:, None],  # (B, 1, D)
                    self.target_point_proj(tps / self.tp_scale),  # (B, 3, D)
                ],
                dim=1,
            )
            + self.status_type
        )  # (B, 5, D)
        memory = torch.cat([bev, status.to(bev.dtype)], dim=1)
        features = self.decoder(self.queries[None].expand(B, -1, -1), memory).float()  # (B, 19, D)
        route = self.route_out(features[:, :NUM_ROUTE_POINTS]).cumsum(dim=1)  # (B, 10, 2)
        waypoints = self.waypoint_out(
            features[:, NUM_ROUTE_POINTS : NUM_ROUTE_POINTS + NUM_WAYPOINTS]
        ).cumsum(dim=1)
        speed_logits = self.speed_out(features[:, -1])  # (B, 8)
        target_speed = (speed_logits.softmax(-1) * self.speed_classes).sum(-1)  # (B,)
        return {
            "waypoints": waypoints,
            "route": route,
            "target_speed_logits": speed_logits,
            "target_speed_mps": target_speed,
        }
