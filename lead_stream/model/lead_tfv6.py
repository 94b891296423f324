"""`LeadTFv6`: LEAD's TFv6 (resnet34, 3 cameras, Leaderboard 2.0 mode) in plain torch, and `build_model`.

The module tree mirrors `lead.tfv6.tfv6.TFv6` — backbone, semantic_decoder, depth_decoder,
bev_semantic_decoder, center_net_decoder, radar_detector, planning_decoder — so that its state dict has
LEAD's 736 (pretrain) / 866 (posttrain) names, shapes and dtypes (`tests/assets/lead_tfv6_state_dict.json`,
from LEAD 4489176 with `transfuser_token_dim=256`). A `model_EEEE.pth` of either side loads into the
other with `strict=True`. Disabled heads (`use_semantic`, ... in `ModelConfig`) are not built, as in LEAD.

forward(...) takes the same keyword tensors as `TFv6` and returns the same dict keys: semantic
(B,10,384,1152) logits, depth_m (B,384,1152) metres (raw regression, like LEAD), bev_semantic
(B,13,320,384), center_net_{heatmap,wh,offset,yaw_class,yaw_res,velocity} on (80,96), radar_features
(B,20,256), radar_detections (B,20,4), and with the planner waypoints (B,8,2), route (B,10,2),
target_speed_logits (B,8), target_speed_mps (B,).
"""

from __future__ import annotations

import torch
from torch import nn

from lead_stream.core.constants import NUM_BEV_SEMANTIC_CLASSES, NUM_BOX_CLASSES, NUM_SEMANTIC_CLASSES
from lead_stream.model.lead_backbone import TransfuserBackbone
from lead_stream.model.lead_heads import BEVDecoder, CenterNetDecoder, PerspectiveDecoder, RadarDetector
from lead_stream.model.lead_planning import PlanningDecoder
from lead_stream.model.resnet import fp32_norms
from lead_stream.model.tfv6 import ModelConfig, TFv6


class LeadTFv6(nn.Module):
    """LEAD's TFv6 module layout; `use_planning_decoder` adds the post-training planner."""

    def __init__(self, config: ModelConfig, *, use_planning_decoder: bool) -> None:
        super().__init__()
        if config.preset != "lead":
            raise ValueError(f"LeadTFv6 needs preset lead, got {config.preset!r}")
        cfg = config.resolved()
        self.config = cfg
        self.use_planning_decoder = use_planning_decoder
        dropout = cfg.dropout
        self.backbone = TransfuserBackbone(
            gpt_layers=cfg.gpt_layers, gpt_heads=cfg.gpt_heads, dropout=dropout
        )
        c4 = self.backbone.num_image_features
        if cfg.use_semantic:
            self.semantic_decoder = PerspectiveDecoder(c4, NUM_SEMANTIC_CLASSES, cfg.decoder_channels)
        if cfg.use_depth:
            self.depth_decoder = PerspectiveDecoder(c4, 1, cfg.decoder_channels)
        if cfg.use_bev_semantic:
            self.bev_semantic_decoder = BEVDecoder(NUM_BEV_SEMANTIC_CLASSES)
        if cfg.detect_boxes:
            self.center_net_decoder = CenterNetDecoder(NUM_BOX_CLASSES)
        self.radar_detector: RadarDetector | None = None
        if cfg.use_radar_detection:
            self.radar_detector = RadarDetector(
                self.backbone.num_lidar_features,
                dim=cfg.radar_token_dim,
                heads=cfg.attention_heads,
                ff_dim=cfg.radar_ff_dim,
                layers=cfg.radar_layers,
                hidden=cfg.radar_ff_dim,
                dropout=dropout,
            )
        self.planning_decoder: PlanningDecoder | None = None
        if use_planning_decoder:
            self.planning_decoder = PlanningDecoder(
                self.backbone.num_lidar_features,
                dim=cfg.token_dim,
                heads=cfg.attention_heads,
                layers=cfg.planning_layers,
                ff_dim=cfg.planning_ff_dim,
                dropout=dropout,
                radar_dim=cfg.radar_token_dim if cfg.use_radar_detection else None,
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
        bev, image = self.backbone(rgb, lidar_bev)  # (B, 512, 10, 12), (B, 512, 12, 36)
        out: dict[str, torch.Tensor] = {}
        radar_features = radar_detections = None
        if self.radar_detector is not None:
            radar_features, radar_detections = self.radar_detector(bev, radar, speed_mps)
            out["radar_features"], out["radar_detections"] = radar_features, radar_detections
        if self.planning_decoder is not None:
            target_points = torch.stack([target_point, target_point_previous, target_point_next], dim=1)
            out.update(
                self.planning_decoder(
                    bev,
                    speed_mps=speed_mps,
                    command=command,
                    target_points=target_points,
                    radar_features=radar_features,
                    radar_detections=radar_detections,
                )
            )
        if hasattr(self, "semantic_decoder"):
            out["semantic"] = self.semantic_decoder(image)
        if hasattr(self, "depth_decoder"):
            out["depth_m"] = self.depth_decoder(image)[:, 0]
        if hasattr(self, "center_net_decoder") or hasattr(self, "bev_semantic_decoder"):
            grid = self.backbone.top_down(bev)  # (B, 64, 80, 96)
            if hasattr(self, "center_net_decoder"):
                out.update(self.center_net_decoder(grid))
            if hasattr(self, "bev_semantic_decoder"):
                out["bev_semantic"] = self.bev_semantic_decoder(grid)
        return out


def build_model(config: ModelConfig, *, use_planning_decoder: bool) -> nn.Module:
    """The model of `config.preset` (lead → `LeadTFv6`, full / compact → `TFv6`), norms computed in fp32."""
    if config.preset == "lead":
        return fp32_norms(LeadTFv6(config, use_planning_decoder=use_planning_decoder))
    return TFv6(config, use_planning_decoder=use_planning_decoder)


# LEAD TrainingConfig keys of the model → lead-stream's `ModelConfig` fields (LEAD's spelling on the left).
LEAD_MODEL_KEYS = {
    "use_semantic": "use_semantic",
    "use_depth": "use_depth",
    "use_bev_semantic": "use_bev_semantic",
    "detect_boxes": "detect_boxes",
    "use_radar_detection": "use_radar_detection",
    "radar_detection": "use_radar_detection",
    "n_layer": "gpt_layers",
    "n_head": "gpt_heads",
    "transfuser_token_dim": "token_dim",
    "radar_token_dim": "radar_token_dim",
    "transfuser_num_bev_cross_attention_layers": "planning_layers",
    "transfuser_num_bev_cross_attention_heads": "attention_heads",
    "radar_num_layers": "radar_layers",
    "radar_tf_dim_ff": "radar_ff_dim",
}


def lead_model_config(data: dict) -> ModelConfig:
    """A config.json written by LEAD itself (its TrainingConfig keys at the top level) → preset lead's config."""
    fields = {
        LEAD_MODEL_KEYS[k]: v for k, v in data.items() if k in LEAD_MODEL_KEYS and k != "radar_detection"
    }
    return ModelConfig(preset="lead", **fields)


def lead_state_dict_layout(model: nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every state-dict entry, in order (the form of the committed LEAD fixture)."""
    return [(name, tuple(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]


def lead_training_keys(config: ModelConfig, *, use_planning_decoder: bool) -> dict[str, object]:
    """LEAD TrainingConfig keys that rebuild this model in LEAD (`TrainingConfig(json)` in LEAD's agent).

    Written at the top level of a preset-lead run's config.json, next to lead-stream's own keys (LEAD ignores
    keys it does not know, and so does lead-stream's reader), so that LEAD's `sensor_agent` / open-loop
    inference build the same TFv6 and load `model_EEEE.pth` strictly.
    """
    cfg = config.resolved()
    return {
        "image_architecture": "resnet34",
        "lidar_architecture": "resnet34",
        "LTF": False,
        "use_planning_decoder": use_planning_decoder,
        "use_tfv5_planning_decoder": False,
        "use_semantic": cfg.use_semantic,
        "use_depth": cfg.use_depth,
        "use_bev_semantic": cfg.use_bev_semantic,
        "detect_boxes": cfg.detect_boxes,
        "radar_detection": cfg.use_radar_detection,
        "use_radar_detection": cfg.use_radar_detection,
        "n_layer": cfg.gpt_layers,
        "n_head": cfg.gpt_heads,
        "transfuser_token_dim": cfg.token_dim,
        "radar_token_dim": cfg.radar_token_dim,
        "transfuser_num_bev_cross_attention_heads": cfg.attention_heads,
        "radar_num_heads": cfg.attention_heads,
        "transfuser_num_bev_cross_attention_layers": cfg.planning_layers,
        "radar_num_layers": cfg.radar_layers,
        "radar_tf_dim_ff": cfg.radar_ff_dim,
        "radar_hidden_dim_tokenizer": cfg.radar_ff_dim,
        "radar_hidden_dim_decoder": cfg.radar_ff_dim,
        "deconv_channel_num_0": cfg.decoder_channels[0],
        "deconv_channel_num_1": cfg.decoder_channels[1],
        "deconv_channel_num_2": cfg.decoder_channels[2],
        "embd_pdrop": cfg.dropout,
        "resid_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "radar_dropout": cfg.dropout,
    }
