"""Camera image + LiDAR BEV histogram → fused image and BEV feature maps (TransFuser, plain torch).

Two ResNet-style encoders (BasicBlocks, GroupNorm so that DDP halves and one process agree exactly) run
side by side. After each of the 4 stages both maps are average-pooled to fixed anchor grids, concatenated as
tokens with a learned positional embedding, mixed by a small GPT, split, upsampled and added back
residually. A top-down path turns the last BEV map into the 80 x 96 (1 m / cell) grid the BEV heads use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lead_stream.core.batch import lidar_unit
from lead_stream.core.constants import BEV_DOWN_SAMPLE_FACTOR, BEV_HEIGHT_PX, BEV_WIDTH_PX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRID_SIZE = (BEV_HEIGHT_PX // BEV_DOWN_SAMPLE_FACTOR, BEV_WIDTH_PX // BEV_DOWN_SAMPLE_FACTOR)  # (80, 96)


class GroupNormFP32(nn.GroupNorm):
    """GroupNorm computed in fp32 even under autocast (LEAD's `patch_norm_fp32`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


class LayerNormFP32(nn.LayerNorm):
    """LayerNorm computed in fp32 even under autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


def norm2d(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (batch-independent, so per-rank halves match the full batch)."""
    return GroupNormFP32(math.gcd(32, channels), channels)


def patch_norms_fp32(module: nn.Module) -> nn.Module:
    """Turn every nn.LayerNorm / nn.GroupNorm below `module` into its fp32 variant, in place."""
    for child in module.modules():
        if type(child) is nn.LayerNorm:
            child.__class__ = LayerNormFP32
        elif type(child) is nn.GroupNorm:
            child.__class__ = GroupNormFP32
    return module


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-downsample or bilinearly upsample (B, C, H, W) to `size`; identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = norm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = norm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), norm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Stem (7x7 stride 2 + max-pool, i.e. stride 4) and 4 stages of BasicBlocks (strides 1, 2, 2, 2)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
            norm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        previous = widths[0]
        for stage_idx, (width, num_blocks) in enumerate(zip(widths, blocks)):
            stride = 1 if stage_idx == 0 else 2
            layers = [BasicBlock(previous, width, stride)]
            layers += [BasicBlock(width, width, 1) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.ModuleList(stages)


class SelfAttention(nn.Module):
    """Multi-head self-attention with SDPA."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(out))


class GPTBlock(nn.Module):
    """Pre-norm transformer block (attention + 4x MLP)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = LayerNormFP32(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.ln2 = LayerNormFP32(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token mixer of one fusion scale: learned positional embedding + blocks + final LayerNorm."""

    def __init__(self, dim: int, num_tokens: int, num_layers: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[GPTBlock(dim, num_heads, dropout) for _ in range(num_layers)])
        self.ln_f = LayerNormFP32(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.ln_f(self.blocks(self.drop(tokens + self.pos_emb)))


class TransFuserBackbone(nn.Module):
    """rgb (B,3,384,1152) u8 + lidar_bev (B,1,320,384) → image (B,C4,h,w), BEV (B,C4,h',w'), grid (B,G,80,96).

    lidar_bev holds uint8 point counts 0..5 (`Batch`), scaled to count / 5 here, on the device. Inputs are
    resized inside the model to `image_size` / `bev_size` (the compact preset trains on 1/4 size).
    """

    def __init__(
        self,
        *,
        image_size: tuple[int, int],
        bev_size: tuple[int, int],
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        image_anchors: tuple[int, int],
        lidar_anchors: tuple[int, int],
        gpt_layers: int,
        gpt_heads: int,
        bev_channels: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.bev_size = tuple(bev_size)
        self.image_anchors = tuple(image_anchors)
        self.lidar_anchors = tuple(lidar_anchors)
        self.image_encoder = ResNetEncoder(3, widths, blocks)
        self.lidar_encoder = ResNetEncoder(1, widths, blocks)
        num_tokens = image_anchors[0] * image_anchors[1] + lidar_anchors[0] * lidar_anchors[1]
        self.lidar_to_image = nn.ModuleList(nn.Conv2d(w, w, 1) for w in widths)
        self.image_to_lidar = nn.ModuleList(nn.Conv2d(w, w, 1) for w in widths)
        self.transformers = nn.ModuleList(GPT(w, num_tokens, gpt_layers, gpt_heads, dropout) for w in widths)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        c4 = widths[-1]
        self.bev_reduce = nn.Conv2d(c4, bev_channels, 1)
        self.bev_up1 = nn.Conv2d(bev_channels, bev_channels, 3, 1, 1)
        self.bev_up2 = nn.Conv2d(bev_channels, bev_channels, 3, 1, 1)
        self.out_channels = c4
        self.bev_channels = bev_channels

    def fuse(
        self, stage_idx: int, image: torch.Tensor, lidar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exchange information between the two branches at one scale (pool → GPT → upsample → add)."""
        B, C, h_img, w_img = image.shape
        _, _, h_lid, w_lid = lidar.shape
        image_small = F.adaptive_avg_pool2d(image, self.image_anchors)  # (B, C, ha, wa)
        lidar_small = F.adaptive_avg_pool2d(self.lidar_to_image[stage_idx](lidar), self.lidar_anchors)
        num_image_tokens = self.image_anchors[0] * self.image_anchors[1]
        tokens = torch.cat([image_small.flatten(2), lidar_small.flatten(2)], dim=2).transpose(
            1, 2
        )  # (B, T, C)
        tokens = self.transformers[stage_idx](tokens)
        image_out = tokens[:, :num_image_tokens].transpose(1, 2).reshape(B, C, *self.image_anchors)
        # contiguous: a conv on the transposed view gives its 1x1 weight a gradient with other strides (DDP warns)
        lidar_out = (
            tokens[:, num_image_tokens:].transpose(1, 2).reshape(B, C, *self.lidar_anchors).contiguous()
        )
        lidar_out = self.image_to_lidar[stage_idx](lidar_out)
        image = image + F.interpolate(image_out, size=(h_img, w_img), mode="bilinear", align_corners=False)
        lidar = lidar + F.interpolate(lidar_out, size=(h_lid, w_lid), mode="bilinear", align_corners=False)
        return image, lidar

    def forward(self, rgb: torch.Tensor, lidar_bev: torch.Tensor) -> dict[str, torch.Tensor]:
        image = resize(rgb.float() / 255.0, self.image_size)  # (B, 3, H, W)
        image = (image - self.mean) / self.std
        lidar = resize(lidar_unit(lidar_bev), self.bev_size)  # (B, 1, X, Y) float32 count / 5
        image = self.image_encoder.stem(image)
        lidar = self.lidar_encoder.stem(lidar)
        for stage_idx, (image_stage, lidar_stage) in enumerate(
            zip(self.image_encoder.stages, self.lidar_encoder.stages)
        ):
            image = image_stage(image)
            lidar = lidar_stage(lidar)
            image, lidar = self.fuse(stage_idx, image, lidar)
        grid = F.relu(self.bev_reduce(lidar))  # (B, G, h', w')
        grid = F.interpolate(grid, scale_factor=2, mode="bilinear", align_corners=False)
        grid = F.relu(self.bev_up1(grid))
        grid = F.interpolate(grid, size=GRID_SIZE, mode="bilinear", align_corners=False)
        grid = F.relu(self.bev_up2(grid))  # (B, G, 80, 96)
        return {"image_features": image, "bev_features": lidar, "bev_grid": grid}
