"""LEAD's TransFuser backbone with LEAD's module names: rgb + LiDAR histogram → image and BEV features.

Two timm-named ResNet34s (`image_encoder` on the ImageNet-normalised image, `lidar_encoder` on the
1-channel histogram count / 5) run stage by stage. After each stage both maps are average-pooled to
anchors (image 12 x 36, LiDAR 10 x 12), LiDAR channels go through `lidar_channel_to_img` (1x1 conv), the
552 tokens + learned `pos_emb` pass one `GPT` (key/query/value attention, ReLU MLP x4, final LayerNorm),
the LiDAR half goes back through `img_channel_to_lidar`, and both halves are bilinearly upsampled and
added to their branch. `top_down` turns the (B, 512, 10, 12) BEV features into the (B, 64, 80, 96) grid
of the BEV heads (c5_conv, x2 upsample + up_conv5, resize + up_conv4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lead_stream.core.batch import lidar_unit
from lead_stream.core.constants import BEV_DOWN_SAMPLE_FACTOR, BEV_HEIGHT_PX, BEV_WIDTH_PX
from lead_stream.model.resnet import RESNET34_WIDTHS, TimmResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_ANCHORS = (12, 36)  # LEAD img_vert_anchors, img_horz_anchors (384 / 32, 1152 / 32)
LIDAR_ANCHORS = (10, 12)  # LEAD lidar_vert_anchors, lidar_horz_anchors (320 / 32, 384 / 32)
BEV_FEATURE_CHANNELS = 64  # LEAD bev_features_chanels
GPT_LINEAR_INIT_STD = 0.02  # LEAD gpt_linear_layer_init_std


class SelfAttention(nn.Module):
    """LEAD's SelfAttention: separate key / query / value projections, SDPA, output projection."""

    def __init__(self, dim: int, num_heads: int, attn_dropout: float, resid_dropout: float) -> None:
        super().__init__()
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.dropout = attn_dropout
        self.resid_drop = nn.Dropout(resid_dropout)
        self.proj = nn.Linear(dim, dim)
        self.n_head = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:
            return proj(x).view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (b, nh, t, hs)

        k, q, v = heads(self.key), heads(self.query), heads(self.value)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1 x), then x + mlp(ln2 x) (ReLU, expansion `block_exp`)."""

    def __init__(self, dim: int, num_heads: int, block_exp: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, block_exp * dim),
            nn.ReLU(True),
            nn.Linear(block_exp * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Fusion transformer of one scale: (image (B,C,12,36), lidar (B,C,10,12)) → the same shapes, mixed."""

    def __init__(
        self, dim: int, *, num_layers: int, num_heads: int, dropout: float, block_exp: int = 4
    ) -> None:
        super().__init__()
        self.n_embd = dim
        num_tokens = IMAGE_ANCHORS[0] * IMAGE_ANCHORS[1] + LIDAR_ANCHORS[0] * LIDAR_ANCHORS[1]
        self.pos_emb = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, block_exp, dropout) for _ in range(num_layers)])
        self.ln_f = nn.LayerNorm(dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, GPT_LINEAR_INIT_STD)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor, lidar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = image.shape[0]
        num_image = image.shape[2] * image.shape[3]
        tokens = torch.cat(
            [image.flatten(2).transpose(1, 2), lidar.flatten(2).transpose(1, 2)], dim=1
        )  # (B, 552, C), row-major cells
        x = self.ln_f(self.blocks(self.drop(self.pos_emb + tokens)))
        image_out = x[:, :num_image].transpose(1, 2).reshape(b, -1, *image.shape[2:])
        lidar_out = x[:, num_image:].transpose(1, 2).reshape(b, -1, *lidar.shape[2:])
        return image_out, lidar_out


class TransfuserBackbone(nn.Module):
    """rgb (B,3,384,1152) uint8 + lidar_bev (B,1,320,384) uint8 counts → BEV (B,512,10,12), image (B,512,12,36)."""

    def __init__(self, *, gpt_layers: int, gpt_heads: int, dropout: float) -> None:
        super().__init__()
        widths = RESNET34_WIDTHS
        self.image_encoder = TimmResNet(3)
        self.avgpool_img = nn.AdaptiveAvgPool2d(IMAGE_ANCHORS)
        self.lidar_encoder = TimmResNet(1)
        self.lidar_channel_to_img = nn.ModuleList(nn.Conv2d(w, w, kernel_size=1) for w in widths)
        self.img_channel_to_lidar = nn.ModuleList(nn.Conv2d(w, w, kernel_size=1) for w in widths)
        self.avgpool_lidar = nn.AdaptiveAvgPool2d(LIDAR_ANCHORS)
        self.transformers = nn.ModuleList(
            GPT(w, num_layers=gpt_layers, num_heads=gpt_heads, dropout=dropout) for w in widths
        )
        grid = (BEV_HEIGHT_PX // BEV_DOWN_SAMPLE_FACTOR, BEV_WIDTH_PX // BEV_DOWN_SAMPLE_FACTOR)  # (80, 96)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.upsample2 = nn.Upsample(size=grid, mode="bilinear", align_corners=False)
        c = BEV_FEATURE_CHANNELS
        self.up_conv5 = nn.Conv2d(c, c, (3, 3), padding=1)
        self.up_conv4 = nn.Conv2d(c, c, (3, 3), padding=1)
        self.c5_conv = nn.Conv2d(widths[-1], c, (1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.num_image_features = widths[-1]
        self.num_lidar_features = widths[-1]

    def top_down(self, bev: torch.Tensor) -> torch.Tensor:
        """(B, 512, 10, 12) BEV features → (B, 64, 80, 96) grid for BEV semantics and CenterNet."""
        p5 = F.relu(self.c5_conv(bev))
        p4 = F.relu(self.up_conv5(self.upsample(p5)))
        return F.relu(self.up_conv4(self.upsample2(p4)))

    def fuse(self, idx: int, image: torch.Tensor, lidar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LEAD's `fuse_features` at stage `idx`."""
        image_tokens = self.avgpool_img(image)
        lidar_tokens = self.lidar_channel_to_img[idx](self.avgpool_lidar(lidar))
        image_mix, lidar_mix = self.transformers[idx](image_tokens, lidar_tokens)
        lidar_mix = self.img_channel_to_lidar[idx](lidar_mix)
        image = image + F.interpolate(image_mix, size=image.shape[2:], mode="bilinear", align_corners=False)
        lidar = lidar + F.interpolate(lidar_mix, size=lidar.shape[2:], mode="bilinear", align_corners=False)
        return image, lidar

    def forward(self, rgb: torch.Tensor, lidar_bev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = (rgb.float() / 255.0 - self.mean) / self.std  # (B, 3, 384, 1152) float32
        lidar = lidar_unit(lidar_bev)  # (B, 1, 320, 384) float32 count / 5
        image = self.image_encoder.stem(image)
        lidar = self.lidar_encoder.stem(lidar)
        for idx in range(len(self.transformers)):
            image = self.image_encoder.stage(idx, image)
            lidar = self.lidar_encoder.stage(idx, lidar)
            image, lidar = self.fuse(idx, image, lidar)
        return lidar, image
