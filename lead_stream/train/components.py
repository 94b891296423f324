"""A run config → the parts a run is made of: the model, this rank's loader, AdamW, the LR schedule, the grad
scaler, and the config.json that records it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lead_stream.core.config import to_dict
from lead_stream.core.errors import ConfigError
from lead_stream.evaluate.evaluator import evaluation_loader
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.model import build_model
from lead_stream.model.lead_tfv6 import lead_training_keys
from lead_stream.model.pretrained import load_image_pretrained
from lead_stream.model.resnet import fp32_norms
from lead_stream.train.config import TrainConfig
from lead_stream.train.distributed import log0


def build_run_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """`config.model` on `device`: SyncBatchNorm if asked, fp32 norms, the image encoder's start (preset lead)."""
    model = build_model(config.model, use_planning_decoder=config.use_planning_decoder)
    if config.sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError(
                "sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm has no CPU path)"
            )
        model = fp32_norms(nn.SyncBatchNorm.convert_sync_batchnorm(model))
    if config.model.preset == "lead" and not (config.load_file or config.continue_failed_training):
        loaded, message = load_image_pretrained(model, config.model.image_pretrained)
        log0(message if loaded else f"WARNING: {message}")
    return model.to(device)


def run_config_json(config: TrainConfig) -> dict[str, Any]:
    """config.json: every lead-stream key, plus (preset lead) LEAD's TrainingConfig keys of the same model."""
    data = to_dict(config)
    if config.model.preset == "lead":
        lead_keys = lead_training_keys(config.model, use_planning_decoder=config.use_planning_decoder)
        data.update({key: value for key, value in lead_keys.items() if key not in data})
    return data


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
    """The streaming loader of this rank over `cache_dir`, with the run's plan, batch and worker keys.

    With a validation set and `val_overlap="exclude"`, its frames are left out of the training collection.
    """
    exclude = config.val_collection is not None and config.val_overlap == "exclude"
    loader_config = LoaderConfig(
        exclude_collection=config.val_collection if exclude else None,
        exclude_buckets=config.val_buckets if exclude else None,
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


def build_val_loader(
    config: TrainConfig, device: torch.device, rank: int, world_size: int, cache_dir: Path | None
) -> Any:
    """This rank's share of the validation frames (fixed order, normal sensors, each frame once)."""
    return evaluation_loader(
        Path(config.carla_root),
        collection=config.val_collection,
        buckets=config.val_buckets,
        max_samples=config.val_max_samples,
        batch_size=config.val_batch_size or config.batch_size,
        num_workers=config.num_workers,
        rank=rank,
        world_size=world_size,
        cache_dir=cache_dir if cache_dir is not None else run_cache_dir(config),
        pin_memory=device.type == "cuda",
    )


def check_overlap(config: TrainConfig, train_loader: Any, val_loader: Any) -> str:
    """One line on how the held-out frames relate to training; raises on overlap with `val_overlap="error"`.

    Raises:
        ConfigError: the training plan contains held-out frames and `val_overlap` is "error".
    """
    val_keys = np.unique(val_loader.catalog.sample_key[val_loader.plan.rows])
    catalog = train_loader.catalog
    train_rows = np.unique(np.concatenate(catalog.bucket_rows)) if catalog.bucket_rows else np.array([], int)
    shared = int(np.isin(val_keys, catalog.sample_key[train_rows]).sum())  # vectorised: millions of keys
    name = config.val_collection + (f"[{','.join(config.val_buckets)}]" if config.val_buckets else "")
    if shared and config.val_overlap == "error":
        raise ConfigError(
            f"{shared} of the {len(val_keys)} validation frames of {name} are in the training collection "
            f"{train_loader.config.collection!r}; set val_overlap=exclude to leave them out of training "
            "or val_overlap=allow to train on them"
        )
    left_out = " (left out of training)" if config.val_overlap == "exclude" else ""
    return (
        f"validation: {len(val_keys)} frames of {name}{left_out}; training serves {len(train_rows)} frames, "
        f"{shared} of them held out (val_overlap={config.val_overlap})"
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
