"""A ResNet34 in plain torch with timm's module names, and the fp32 norm patch of LEAD's training.

`TimmResNet` holds exactly the parameters and buffers of `timm.create_model("resnet34", features_only=True)`
(conv1, bn1, layer1..layer4 of BasicBlocks with bn1/bn2 and a `downsample` Sequential(conv, bn)), under
the same names, with timm's initialisation (Kaiming-normal fan-out convs, BatchNorm 1/0, the last BN of
each residual branch zeroed). A timm or torchvision ResNet34 state dict (without `fc.*`) therefore loads
into it with `strict=True`. `stages(x)` runs the stem and then yields the outputs of the 4 stages
(strides 4, 8, 16, 32), which is how LEAD's backbone walks timm's feature levels.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET34_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """timm's BasicBlock: conv1/bn1/act1, conv2/bn2, + shortcut (downsample), act2."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + shortcut)


class TimmResNet(nn.Module):
    """ResNet with timm's names; (B, in_chans, H, W) → 4 feature maps of 64/128/256/512 channels."""

    def __init__(
        self,
        in_chans: int,
        blocks: tuple[int, ...] = RESNET34_BLOCKS,
        widths: tuple[int, ...] = RESNET34_WIDTHS,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        previous = widths[0]
        for idx, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if idx == 0 else 2
            layers = [BasicBlock(previous, width, stride)]
            layers += [BasicBlock(width, width, 1) for _ in range(count - 1)]
            self.add_module(f"layer{idx + 1}", nn.Sequential(*layers))
            previous = width
        self.widths = tuple(widths)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's `init_weights(zero_init_last=True)`."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    @property
    def layers(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.widths))]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 → bn1 → act1 (stride 2; the maxpool opens stage 1, as in timm's feature levels)."""
        return self.act1(self.bn1(self.conv1(x)))

    def stage(self, idx: int, x: torch.Tensor) -> torch.Tensor:
        """Stage `idx` (0..3); stage 0 starts with the stem's max-pool."""
        if idx == 0:
            x = self.maxpool(x)
        return self.layers[idx](x)

    def stages(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield the 4 stage outputs of `x` (the stem is applied first)."""
        x = self.stem(x)
        for idx in range(len(self.widths)):
            x = self.stage(idx, x)
            yield x


_FP32_CLASSES: dict[type, type] = {}


class _FP32Norm:
    """Mixin: run the norm in fp32 with autocast off, return the input's dtype (LEAD's `patch_norm_fp32`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)  # type: ignore[misc]


NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def fp32_norms(module: nn.Module) -> nn.Module:
    """Make every BatchNorm / SyncBatchNorm / GroupNorm / LayerNorm below `module` compute in fp32, in place.

    The class of each norm is swapped for a subclass (names, parameters and state dict unchanged), so apply
    it after `SyncBatchNorm.convert_sync_batchnorm`, as LEAD does.
    """
    for child in module.modules():
        cls = type(child)
        if isinstance(child, NORM_TYPES) and not isinstance(child, _FP32Norm):
            if cls not in _FP32_CLASSES:
                _FP32_CLASSES[cls] = type(f"{cls.__name__}FP32", (_FP32Norm, cls), {})
            child.__class__ = _FP32_CLASSES[cls]
    return module
