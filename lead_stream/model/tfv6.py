"""`ModelConfig` (presets lead | full | compact) and `TFv6`: Batch tensors → perception (+ planning) outputs.

`lead` is LEAD's own TFv6, module for module (`lead_tfv6.LeadTFv6`, built by `build_model`): its state dict
has LEAD's names and shapes, so checkpoints move both ways. `full` is our GroupNorm variant with LEAD's widths (ResNet34-like stages [3, 4, 6, 3], 64..512, full 384 x 1152 image and 320 x 384
BEV, anchors 12 x 36 / 10 x 12). `compact` resizes the inputs inside the model (image 96 x 288, BEV 80 x 96)
and uses small widths so that it trains on two CPU cores. A `None` field takes the preset's value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lead_stream.core.constants import DEPTH_MAX_M, NUM_SEMANTIC_CLASSES
from lead_stream.model.backbone import TransFuserBackbone
from lead_stream.model.heads import BevSemanticHead, CenterNetHead, PerspectiveDecoder, RadarDetector
from lead_stream.model.planning import PlanningDecoder

LEAD_SIZES: dict[str, object] = dict(  # LEAD's resnet34 TFv6 (LEAD's config defaults)
    image_size=(384, 1152),
    bev_size=(320, 384),
    widths=(64, 128, 256, 512),
    blocks=(3, 4, 6, 3),
    image_anchors=(12, 36),
    lidar_anchors=(10, 12),
    gpt_layers=2,
    gpt_heads=4,
    bev_channels=64,
    decoder_channels=(128, 64, 32),
    token_dim=256,
    attention_heads=8,
    radar_layers=4,
    radar_ff_dim=1024,
    planning_layers=6,
    planning_ff_dim=2048,
)

PRESETS: dict[str, dict[str, object]] = {
    "lead": {**LEAD_SIZES, "radar_token_dim": 256},  # LEAD's module layout (lead_tfv6.LeadTFv6)
    "full": LEAD_SIZES,  # the same sizes in our GroupNorm layout
    "compact": dict(
        image_size=(96, 288),
        bev_size=(80, 96),
        widths=(16, 32, 64, 128),
        blocks=(1, 1, 1, 1),
        image_anchors=(3, 9),
        lidar_anchors=(3, 3),
        gpt_layers=1,
        gpt_heads=4,
        bev_channels=32,
        decoder_channels=(32, 16, 16),
        token_dim=64,
        attention_heads=4,
        radar_layers=1,
        radar_ff_dim=128,
        planning_layers=2,
        planning_ff_dim=128,
    ),
}


LEAD_FIXED_FIELDS = (
    "image_size",
    "bev_size",
    "widths",
    "blocks",
    "image_anchors",
    "lidar_anchors",
    "bev_channels",
)


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    # --- preset ---
    preset: Literal["lead", "full", "compact"] = (
        "lead"  # lead: LEAD's TFv6 exactly (BatchNorm); full: GroupNorm twin; compact: 1/4 size for CPUs
    )
    # --- backbone (None = the preset's value) ---
    image_size: tuple[int, int] | None = (
        None  # (H, W) the stitched camera image is resized to inside the model
    )
    bev_size: tuple[int, int] | None = (
        None  # (X rows, Y cols) the LiDAR BEV and BEV-semantic maps are resized to
    )
    widths: tuple[int, ...] | None = None  # channels of the 4 ResNet stages (both encoders)
    blocks: tuple[int, ...] | None = None  # BasicBlocks per stage ([3, 4, 6, 3] = resnet34)
    image_anchors: tuple[int, int] | None = None  # image token grid of each fusion GPT
    lidar_anchors: tuple[int, int] | None = None  # LiDAR token grid of each fusion GPT
    gpt_layers: int | None = None  # transformer blocks per fusion scale (LEAD n_layer=2)
    gpt_heads: int | None = None  # attention heads of the fusion GPTs
    dropout: float = 0.1  # GPT / decoder dropout (set 0 for bit-exact DDP parity checks)
    # --- heads ---
    bev_channels: int | None = None  # channels of the 80 x 96 BEV grid (LEAD 64)
    decoder_channels: tuple[int, int, int] | None = None  # perspective decoder convs (LEAD 128, 64, 32)
    token_dim: int | None = None  # width of radar / planning transformers (LEAD 256)
    radar_token_dim: int | None = (
        None  # lead: radar detector width (LEAD radar_token_dim 256); else = token_dim
    )
    attention_heads: int | None = None  # heads of radar / planning transformers (LEAD 8)
    use_semantic: bool = True  # LEAD use_semantic: build the perspective semantic decoder and its loss
    use_depth: bool = True  # LEAD use_depth: build the perspective depth decoder and its loss
    use_bev_semantic: bool = True  # LEAD use_bev_semantic: build the BEV semantic decoder and its loss
    detect_boxes: bool = True  # LEAD detect_boxes: build the CenterNet decoder and its 6 losses
    use_radar_detection: bool = True  # LEAD radar_detection: radar detector (+ its 20 planner tokens)
    image_pretrained: str = "imagenet"  # lead: image encoder start; imagenet (hub via timm), none, or a ResNet34 .pth/.safetensors
    radar_layers: int | None = None  # radar decoder layers (LEAD 4)
    radar_ff_dim: int | None = None  # radar decoder feed-forward width (LEAD 1024)
    planning_layers: int | None = None  # planning decoder layers (LEAD 6)
    planning_ff_dim: int | None = None  # planning decoder feed-forward width (LEAD 2048)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.widths is not None and len(self.widths) != 4:
            raise ValueError(f"widths needs 4 stages, got {self.widths}")
        if self.blocks is not None and (len(self.blocks) != 4 or min(self.blocks) < 1):
            raise ValueError(f"blocks needs 4 positive counts, got {self.blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.preset != "lead" and self.radar_token_dim is not None:
            raise ValueError("model.radar_token_dim exists in preset lead only (full/compact use token_dim)")
        if self.preset == "lead":
            for name in LEAD_FIXED_FIELDS:
                value = getattr(self, name)
                if value is not None and _as_tuple(value) != _as_tuple(PRESETS["lead"][name]):
                    raise ValueError(
                        f"model.{name} is fixed by LEAD's resnet34 TFv6 in preset lead "
                        f"({PRESETS['lead'][name]}); use preset full or compact to change it"
                    )

    def resolved(self) -> ModelConfig:
        """A copy with every `None` replaced by the preset's value."""
        preset = PRESETS[self.preset]
        return dataclasses.replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})


class TFv6(nn.Module):
    """TransFuser v6-style model; `use_planning_decoder` adds the post-training planner.

    forward(rgb, lidar_bev, radar, speed_mps, command, target_point, target_point_previous, target_point_next)
    returns a dict: semantic (B,10,H,W), depth_m (B,H,W), bev_semantic (B,13,X,Y), center_net_* on (80,96),
    radar_detections (B,20,4) [if radar], and waypoints (B,8,2), route (B,10,2), target_speed_logits (B,8)
    [if planning].
    """

    def __init__(self, config: ModelConfig, *, use_planning_decoder: bool) -> None:
        super().__init__()
        if config.preset == "lead":
            raise ValueError("preset lead is LEAD's own module layout: build it with model.build_model")
        cfg = config.resolved()
        self.config = cfg
        self.use_planning_decoder = use_planning_decoder
        self.backbone = TransFuserBackbone(
            image_size=cfg.image_size,
            bev_size=cfg.bev_size,
            widths=cfg.widths,
            blocks=cfg.blocks,
            image_anchors=cfg.image_anchors,
            lidar_anchors=cfg.lidar_anchors,
            gpt_layers=cfg.gpt_layers,
            gpt_heads=cfg.gpt_heads,
            bev_channels=cfg.bev_channels,
            dropout=cfg.dropout,
        )
        c4 = cfg.widths[-1]
        self.semantic_decoder = (
            PerspectiveDecoder(c4, cfg.decoder_channels, NUM_SEMANTIC_CLASSES, cfg.image_size)
            if cfg.use_semantic
            else None
        )
        self.depth_decoder = (
            PerspectiveDecoder(c4, cfg.decoder_channels, 1, cfg.image_size) if cfg.use_depth else None
        )
        self.bev_semantic_head = (
            BevSemanticHead(cfg.bev_channels, cfg.bev_size) if cfg.use_bev_semantic else None
        )
        self.center_net = CenterNetHead(cfg.bev_channels) if cfg.detect_boxes else None
        self.radar_detector = (
            RadarDetector(
                c4, cfg.token_dim, cfg.attention_heads, cfg.radar_ff_dim, cfg.radar_layers, cfg.dropout
            )
            if cfg.use_radar_detection
            else None
        )
        self.planning_decoder = (
            PlanningDecoder(
                c4, cfg.token_dim, cfg.attention_heads, cfg.planning_ff_dim, cfg.planning_layers, cfg.dropout
            )
            if use_planning_decoder
            else None
        )

    def forward(
        self,
        *,
        rgb: torch.Tensor,
        lidar_bev: torch.Tensor,
        radar: torch.Tensor,
        speed_mps: torch.Tensor,
        command: torch.Tensor,
        target_point: torch.Tensor,
        target_point_previous: torch.Tensor,
        target_point_next: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        features = self.backbone(rgb, lidar_bev)
        image, bev, grid = features["image_features"], features["bev_features"], features["bev_grid"]
        out: dict[str, torch.Tensor] = {}
        if self.semantic_decoder is not None:
            out["semantic"] = self.semantic_decoder(image)  # (B, 10, H, W)
        if self.depth_decoder is not None:
            out["depth_m"] = torch.sigmoid(self.depth_decoder(image)[:, 0].float()) * DEPTH_MAX_M  # (B, H, W)
        if self.bev_semantic_head is not None:
            out["bev_semantic"] = self.bev_semantic_head(grid)  # (B, 13, X, Y)
        if self.center_net is not None:
            out.update(self.center_net(grid))
        if self.radar_detector is not None:
            out.update(self.radar_detector(bev, radar, speed_mps))
        if self.planning_decoder is not None:
            out.update(
                self.planning_decoder(
                    bev,
                    speed_mps=speed_mps,
                    command=command,
                    target_point=target_point,
                    target_point_previous=target_point_previous,
                    target_point_next=target_point_next,
                )
            )
        return out


MODEL_INPUTS = (
    "rgb",
    "lidar_bev",
    "radar",
    "speed_mps",
    "command",
    "target_point",
    "target_point_previous",
    "target_point_next",
)


def model_inputs(batch: object) -> dict[str, torch.Tensor]:
    """The Batch fields `TFv6.forward` takes, as keyword arguments."""
    return {name: getattr(batch, name) for name in MODEL_INPUTS}


def count_parameters(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


def parameter_breakdown(model: TFv6) -> dict[str, int]:
    """Parameters per top-level part (backbone, heads, planner)."""
    return {name: count_parameters(child) for name, child in model.named_children()}
