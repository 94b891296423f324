"""A run config → the parts a run is made of: this rank's loader, AdamW, the LR schedule, the grad scaler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.train.config import TrainConfig


def run_cache_dir(config: TrainConfig) -> Path:
    """The cache the run reads: `cache_dir` (one cache, or the newest complete one of a cache root), else
    the newest complete cache under `carla_root/cache`."""
    from lead_stream.cache.inventory import find_cache

    return find_cache(Path(config.cache_dir) if config.cache_dir else Path(config.carla_root))


def cache_choice(cache_dir: Path) -> str:
    """How `cache_dir` was chosen, when its cache root holds other complete caches (else "")."""
    from lead_stream.cache.inventory import list_caches

    others = [c for c in list_caches(cache_dir.parent) if c.complete and c.cache_dir != cache_dir]
    if not others:
        return ""
    return (
        f"; newest of {len(others) + 1} complete caches (cache_dir=<folder> picks another; "
        f"list them: lead-stream caches --cache-dir {cache_dir.parent})"
    )


def build_loader(
    config: TrainConfig, device: torch.device, rank: int, world_size: int, cache_dir: Path
) -> Any:
    """The streaming loader of this rank over `cache_dir`, with the run's plan, batch and worker keys."""
    loader_config = LoaderConfig(
        batch_size=config.batch_size,
        seed=config.seed,
        collection=config.collection or config.phase,
        mixture=config.mixture,
        epoch_size=config.epoch_size,
        sample_with_replacement=config.sample_with_replacement,
        perturbation_prob=config.perturbation_prob,
        num_workers=config.num_workers,
        on_bad_sample=config.on_bad_sample,
        pin_memory=device.type == "cuda",
    )
    return make_loader(
        Path(config.carla_root),
        config=loader_config,
        rank=rank,
        world_size=world_size,
        cache_dir=cache_dir,
    )


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """LEAD's CosineAnnealingWarmRestarts (T_0 = one epoch, T_mult 2), stepped every iteration; else plain cosine."""
    if config.use_cosine_annealing_with_restarts:
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(1, steps_per_epoch), T_mult=2
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, config.epochs * steps_per_epoch)
    )


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """LEAD's AdamW (amsgrad) over every parameter of `model`."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, amsgrad=True)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(
        device.type,
        enabled=precision == "fp16",
        init_scale=1024.0,
        growth_factor=2.0,
        backoff_factor=0.5,
        growth_interval=256,
    )
