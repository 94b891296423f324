"""LEAD's colour augmentation, batched in torch on the training device: rgb (B, 3, H, W) uint8 → same.

LEAD (`image_augmenter`, imgaug) runs six ops in a random order per image, each with probability
`use_color_aug_prob` (0.2): GaussianBlur σ ∈ [0, 1]; AdditiveGaussianNoise σ ∈ [0, 0.05·255]; Dropout of
1–10 % of the pixels; Multiply by [1/1.2, 1.2]; LinearContrast [1/1.2, 1.2] around 127.5 (the last four
per channel in half of the cases); ElasticTransformation α ∈ [0.5, 1.5], σ = 0.25. About 74 % of the images
(1 − 0.8⁶) change. Each op rounds and clips to uint8, as imgaug does.

Every sample draws its own parameters and noise from a generator seeded by (run seed, epoch, global step,
the sample's identity and its slot among equal samples), so an image gets the same augmentation whether
the global batch runs in one process or is split over ranks, and a resumed run repeats it bit for bit.
The trainer applies it to training batches only, never in evaluation.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
import torch.nn.functional as F

OPS = ("blur", "noise", "dropout", "multiply", "contrast", "elastic")


def sample_seeds(seed: int, epoch: int, step: int, identities: list[str]) -> list[int]:
    """One 63-bit seed per sample from (seed, epoch, step, identity, occurrence of that identity)."""
    seen: dict[str, int] = {}
    seeds = []
    for identity in identities:
        slot = seen.get(identity, 0)
        seen[identity] = slot + 1
        digest = hashlib.blake2b(f"{seed}/{epoch}/{step}/{identity}/{slot}".encode(), digest_size=8).digest()
        seeds.append(int.from_bytes(digest, "little") >> 1)
    return seeds


def _uniform(g: torch.Generator, low: float, high: float, device: torch.device) -> float:
    return float(low + (high - low) * torch.rand((), generator=g, device=device))


def _per_channel(g: torch.Generator, device: torch.device) -> bool:
    return bool(torch.rand((), generator=g, device=device) < 0.5)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255)


def _smooth(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Separable Gaussian of (..., H, W) with reflected borders, as weighted sums of shifted slices."""
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).tolist()
    h, w = x.shape[-2:]
    padded = F.pad(x.reshape(-1, 1, h, w), (radius, radius, 0, 0), mode="reflect")
    y = sum(wk * padded[..., k : k + w] for k, wk in enumerate(weights))
    padded = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = sum(wk * padded[..., k : k + h, :] for k, wk in enumerate(weights))
    return y.reshape(x.shape)


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = _uniform(g, 0.0, 1.0, x.device)
    if sigma < 0.05:
        return x
    return _to_u8(_smooth(x, sigma, max(1, math.ceil(3 * sigma))))


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    scale = _uniform(g, 0.0, 0.05 * 255, x.device)
    shape = x.shape if _per_channel(g, x.device) else (1, *x.shape[1:])
    return _to_u8(x + scale * torch.randn(shape, generator=g, device=x.device))


def _dropout(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    p = _uniform(g, 0.01, 0.1, x.device)
    shape = x.shape if _per_channel(g, x.device) else (1, *x.shape[1:])
    keep = torch.rand(shape, generator=g, device=x.device) >= p
    return x * keep


def _factors(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(C, 1, 1) factors in [1/1.2, 1.2]: one per channel in half of the cases, else one for all."""
    count = x.shape[0] if _per_channel(g, x.device) else 1
    low, high = 1 / 1.2, 1.2
    return (low + (high - low) * torch.rand(count, generator=g, device=x.device)).view(-1, 1, 1)


def _multiply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return _to_u8(x * _factors(x, g))


def _contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return _to_u8(127.5 + _factors(x, g) * (x - 127.5))


def _elastic(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-pixel displacement: uniform(-1, 1) fields smoothed with σ = 0.25 px, times α, bilinear remap."""
    alpha = _uniform(g, 0.5, 1.5, x.device)
    _, h, w = x.shape
    field = _smooth(torch.rand((2, h, w), generator=g, device=x.device) * 2 - 1, 0.25, 1)
    dx, dy = alpha * field[0], alpha * field[1]  # (h, w) pixels
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=torch.float32),
        torch.arange(w, device=x.device, dtype=torch.float32),
        indexing="ij",
    )
    grid = torch.stack([(xs + dx) / (w - 1) * 2 - 1, (ys + dy) / (h - 1) * 2 - 1], dim=-1)[None]
    out = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    return _to_u8(out[0])


OP_FUNCTIONS = {
    "blur": _blur,
    "noise": _noise,
    "dropout": _dropout,
    "multiply": _multiply,
    "contrast": _contrast,
    "elastic": _elastic,
}


def color_augment(rgb: torch.Tensor, seeds: list[int], *, prob: float = 0.2) -> torch.Tensor:
    """LEAD's six colour ops on every image of `rgb` (B, 3, H, W) uint8, one generator per image.

    Args:
        rgb: the batch's camera images on the training device.
        seeds: one seed per image (`sample_seeds`).
        prob: LEAD use_color_aug_prob, the chance of each op.

    Returns:
        (B, 3, H, W) uint8 on the same device.
    """
    out = []
    for image, seed in zip(rgb, seeds):
        g = torch.Generator(device=rgb.device).manual_seed(seed)
        order = torch.randperm(len(OPS), generator=g, device=rgb.device).tolist()
        chosen = (torch.rand(len(OPS), generator=g, device=rgb.device) < prob).tolist()
        x = image.float()
        for op in order:
            if chosen[op]:
                x = OP_FUNCTIONS[OPS[op]](x, g)
        out.append(x.to(torch.uint8) if any(chosen) else image)
    return torch.stack(out)


def augment_batch(batch: Any, *, seed: int, epoch: int, step: int, prob: float) -> Any:
    """`batch` with `color_augment` applied to its rgb, each sample seeded by (seed, epoch, step, its
    route/frame/variant identity, its slot): the same whether the batch runs in one process or over ranks."""
    identities = [
        f"{route}/{int(frame)}/{int(perturbated)}"
        for route, frame, perturbated in zip(batch.route_id, batch.frame_idx, batch.perturbated)
    ]
    batch.rgb = color_augment(batch.rgb, sample_seeds(seed, epoch, step, identities), prob=prob)
    return batch
