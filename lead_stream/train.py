"""Shard cache (via `make_loader`) → trained TFv6 checkpoints, TensorBoard logs and config.json in `logdir`.

One loop for both phases (LEAD §5): pretrain trains perception only; posttrain (`use_planning_decoder`) loads
the pretrain weights non-strictly, restarts the epoch count and builds a fresh optimizer and scheduler.
AdamW(amsgrad) + CosineAnnealingWarmRestarts(T_0 = steps per epoch, T_mult = 2) stepped every iteration.
Checkpoint sets use LEAD's names and are written at the end of every epoch, every `checkpoint_every_steps`
and when `max_steps` stops the run; `continue_failed_training=true` resumes step-exactly from the newest
complete set (model, optimizer, scheduler, scaler, loader position, RNG).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lead_stream import checkpoint as ckpt
from lead_stream.atomic import atomic_write_text, remove_stale_tmp
from lead_stream.config import apply_overrides, format_config, from_dict, to_dict
from lead_stream.distributed import (
    all_reduce_sum,
    barrier,
    destroy_distributed,
    dist_info,
    init_distributed,
    is_rank_zero,
    log0,
)
from lead_stream.errors import ConfigError
from lead_stream.metrics import MetricsLogger
from lead_stream.model import LossWeights, ModelConfig, TFv6, centernet_targets, compute_losses, model_inputs
from lead_stream.model.losses import active_losses, planning_metrics
from lead_stream.model.tfv6 import count_parameters

Precision = Literal["auto", "bf16", "fp16", "fp32"]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # --- data (LEAD: carla_root holds data/; we also need index/ and cache/ there) ---
    carla_root: Path = Path("data/carla_leaderboard2")  # data root with index/ and cache/<pipeline_id>/
    cache_dir: Path | None = None  # a specific cache dir; None = newest complete cache under carla_root/cache
    collection: str | None = None  # bucket collection; None = "pretrain" / "posttrain" by phase
    mixture: dict[str, float] | None = None  # bucket -> rate (LEAD meaning); None = the bucket table's rates
    epoch_size: int | None = None  # samples per epoch; None = the collection's size, 0 = LEAD's Σ len·rate
    perturbation_prob: float = 0.5  # LEAD use_sensor_perburtation_prob: chance of the perturbated variant
    num_workers: int = 2  # loader worker processes per rank (0 = main process)
    on_bad_sample: Literal["raise", "skip"] = "raise"  # loader policy for unreadable samples
    # --- run ---
    logdir: Path | None = None  # run directory: checkpoints, config.json, TensorBoard events (required)
    description: str = "TFv6"  # free text stored in config.json
    seed: int = 0  # model init, dropout and loader plan seed
    # --- schedule ---
    epochs: int = 31  # LEAD: 31 (cosine restarts after epochs 1, 3, 7, 15, 31)
    batch_size: int = 64  # GLOBAL batch over all ranks (per rank = batch_size / world_size)
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay (amsgrad=True, as LEAD)
    use_cosine_annealing_with_restarts: bool = True  # False: CosineAnnealingLR over the whole run
    grad_clip_norm: float = 0.0  # clip the global grad norm to this; 0 = off (LEAD has no clipping)
    max_steps: int = 0  # stop after this many global steps (tests, demos); 0 = unlimited
    # --- phase ---
    use_planning_decoder: bool = False  # False = pre-training (perception only), True = post-training
    load_file: Path | None = None  # model_EEEE.pth to start from (posttrain: the pretrain checkpoint)
    continue_failed_training: bool = False  # resume from the newest complete checkpoint set in logdir
    # --- model and losses ---
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture; model.preset=compact|full
    loss_weights: LossWeights = field(default_factory=LossWeights)  # LEAD detailed_loss_weights (normalised)
    # --- hardware ---
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda:<local_rank> if available, else cpu
    precision: Precision = "auto"  # auto: bf16 if the GPU supports it, else fp16 + GradScaler; fp32 on CPU
    # --- checkpoints ---
    checkpoint_every_steps: int = (
        0  # also save mid-epoch every N global steps (step-exact resume); 0 = epoch ends
    )
    # --- logging ---
    log_scalars_frequency: int = 10  # TensorBoard scalars every N steps (LEAD: 1 local, 50 on SLURM)
    log_images_frequency: int = 500  # training images every N steps (and at step 0)
    visualize_training: bool = True  # False: no training images
    log_wandb: bool = False  # also log to WandB (only if installed; else a warning)
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip_norm": self.grad_clip_norm >= 0,
            "max_steps": self.max_steps >= 0,
            "checkpoint_every_steps": self.checkpoint_every_steps >= 0,
            "log_scalars_frequency": self.log_scalars_frequency >= 1,
            "log_images_frequency": self.log_images_frequency >= 1,
            "num_workers": self.num_workers >= 0,
            "perturbation_prob": 0.0 <= self.perturbation_prob <= 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid value for {bad[0]}: {getattr(self, bad[0])!r}")

    @property
    def phase(self) -> str:
        return "posttrain" if self.use_planning_decoder else "pretrain"


def pretrain_config() -> TrainConfig:
    """LEAD's pre-training: perception heads only, 31 epochs, global batch 64."""
    return TrainConfig(logdir=Path("outputs/local_training/pretrain"), use_planning_decoder=False)


def posttrain_config(load_file: Path | None = None) -> TrainConfig:
    """LEAD's post-training: + planning decoder, starting from the pretrain checkpoint `load_file`."""
    return TrainConfig(
        logdir=Path("outputs/local_training/posttrain"), use_planning_decoder=True, load_file=load_file
    )


def resolve_config(preset: TrainConfig, overrides: list[str] | None) -> TrainConfig:
    """Preset + `key=value` overrides, with LEAD's config inheritance (§5.4).

    With `load_file` set, the `config.json` next to it is the base (posttrain inherits batch size, epochs,
    model, ...); with `continue_failed_training`, `<logdir>/config.json` is. The preset's phase and the
    command-line overrides always win.

    Raises:
        ConfigError: unknown key, bad value, or an unreadable base config.json.
    """
    cfg = apply_overrides(preset, overrides)
    base_file = None
    if (
        cfg.continue_failed_training
        and cfg.logdir is not None
        and (Path(cfg.logdir) / "config.json").exists()
    ):
        base_file = Path(cfg.logdir) / "config.json"
    elif cfg.load_file is not None and (Path(cfg.load_file).parent / "config.json").exists():
        base_file = Path(cfg.load_file).parent / "config.json"
    if base_file is None:
        return cfg
    try:
        base = from_dict(TrainConfig, json.loads(base_file.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise ConfigError(f"{base_file}: not a TrainConfig JSON ({error})") from None
    base = dataclasses.replace(
        base,
        logdir=preset.logdir,
        use_planning_decoder=preset.use_planning_decoder,
        load_file=preset.load_file,
        continue_failed_training=False,
        max_steps=preset.max_steps,
    )
    return apply_overrides(base, overrides)


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """auto → cuda:<local_rank> when CUDA is available, else cpu."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto → bf16 where the device computes it natively, fp16 (+ GradScaler) on other GPUs, fp32 on CPU."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"
    try:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        native_bf16 = torch.cuda.is_bf16_supported()
    return "bf16" if native_bf16 else "fp16"


@dataclass
class TrainSummary:
    """What a `train` call did (rank 0's view)."""

    logdir: Path
    phase: str
    steps: int  # global steps done at the end (including earlier runs)
    epochs_completed: int
    start_step: int  # 0, or the step a resumed run started from
    losses: list[tuple[int, float]]  # (step index, global total loss) of the steps this call ran
    gradient_steps_skipped: int
    samples_per_s: float
    data_wait_share: float
    num_parameters: int
    precision: str
    device: str
    checkpoint: Path | None = None  # newest model file written

    def one_line(self) -> str:
        last = f"{self.losses[-1][1]:.4f}" if self.losses else "n/a"
        return (
            f"{self.phase}: {self.steps} steps ({self.epochs_completed} epochs), last loss {last}, "
            f"{self.samples_per_s:.1f} samples/s ({self.precision} on {self.device}, "
            f"{self.data_wait_share:.1%} waiting for data), "
            f"{self.gradient_steps_skipped} skipped, checkpoint {self.checkpoint}"
        )


def _build_loader(config: TrainConfig, device: torch.device, rank: int, world_size: int) -> Any:
    from lead_stream.loader import LoaderConfig, make_loader

    loader_config = LoaderConfig(
        batch_size=config.batch_size,
        seed=config.seed,
        collection=config.collection or config.phase,
        mixture=config.mixture,
        epoch_size=config.epoch_size,
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
        cache_dir=Path(config.cache_dir) if config.cache_dir else None,
    )


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    if config.use_cosine_annealing_with_restarts:
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(1, steps_per_epoch), T_mult=2
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, config.epochs * steps_per_epoch)
    )


class Trainer:
    """Holds the model, optimizer and loader of one run; `fit()` runs the loop."""

    def __init__(self, config: TrainConfig, *, loader: Any = None) -> None:
        if config.logdir is None:
            raise ConfigError("logdir must be set (checkpoints, config.json and TensorBoard go there)")
        self.config = config
        self.info = dist_info()
        self.device = resolve_device(config.device, self.info.local_rank)
        init_distributed(self.info, self.device)
        self.rank0 = is_rank_zero()
        self.precision = resolve_precision(config.precision, self.device)
        self.logdir = Path(config.logdir)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        if self.rank0:
            self.logdir.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(self.logdir)
            atomic_write_text(self.logdir / "config.json", json.dumps(to_dict(config), indent=2) + "\n")
            log0(format_config(config))
        barrier()
        torch.manual_seed(config.seed)
        self.model = TFv6(config.model, use_planning_decoder=config.use_planning_decoder).to(self.device)
        self.num_parameters = count_parameters(self.model)
        self.loader = (
            loader
            if loader is not None
            else _build_loader(config, self.device, self.info.rank, self.info.world_size)
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the loader yields no batch per epoch (batch_size {config.batch_size} too large?)"
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, amsgrad=True
        )
        self.scheduler = _make_scheduler(config, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(
            self.device.type,
            enabled=self.precision == "fp16",
            init_scale=1024.0,
            growth_factor=2.0,
            backoff_factor=0.5,
            growth_interval=256,
        )
        self.step, self.start_epoch, self.batches_done, self.skipped = 0, 0, 0, 0
        self.resume_state = self._restore()
        self.ddp_model: nn.Module = self.model
        if self.info.is_distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        names = active_losses(
            use_radar_detection=self.model.radar_detector is not None,
            use_planning_decoder=config.use_planning_decoder,
        )
        self.loss_weights = config.loss_weights.normalized(names)
        self.metrics = MetricsLogger(
            self.logdir,
            enabled=self.rank0,
            use_wandb=config.log_wandb,
            wandb_project=f"lead_{config.phase}",
            run_config=to_dict(config),
            purge_step=self.step if self.resume_state is not None else None,
        )

    # --- start / resume ---
    def _restore(self) -> ckpt.ResumeState | None:
        config = self.config
        if config.continue_failed_training:
            state = ckpt.find_latest_checkpoint(self.logdir)
            if state is not None:
                ckpt.load_checkpoint(
                    self.logdir,
                    state,
                    model=self.model,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    scaler=self.scaler,
                    map_location=self.device,
                )
                ckpt.set_rng_state(state.rng)
                self.step, self.skipped = state.step, state.gradient_steps_skipped
                if state.epoch_complete:
                    self.start_epoch, self.batches_done = state.epoch + 1, 0
                else:
                    self.start_epoch, self.batches_done = state.epoch, state.batches_done
                    if state.loader is not None:
                        self.loader.load_state_dict(state.loader)
                log0(
                    f"resuming from {self.logdir} at step {self.step} (epoch {self.start_epoch}, "
                    f"batch {self.batches_done})"
                )
                return state
            log0(f"continue_failed_training: no complete checkpoint in {self.logdir}; starting fresh")
        if config.load_file is not None:
            if not Path(config.load_file).exists():
                raise ConfigError(f"load_file {config.load_file} does not exist")
            missing, unexpected = ckpt.load_weights(
                self.model, Path(config.load_file), strict=False, map_location=self.device
            )
            new = sorted({key.split(".")[0] for key in missing})
            log0(
                f"loaded {config.load_file}: {len(missing)} missing keys (new modules: {new}), "
                f"{len(unexpected)} unexpected keys"
            )
        return None

    # --- one step ---
    def train_step(
        self, batch: Any, *, want_grad_norm: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict, float | None, bool]:
        """Forward, loss, backward and optimizer step on this rank's `batch`.

        Returns:
            (losses, global total loss, outputs, grad norm or None, whether the step was applied).
        """
        batch = batch.to(self.device, non_blocking=True)
        amp = self.precision in AMP_DTYPES
        with torch.autocast(
            self.device.type, dtype=AMP_DTYPES.get(self.precision, torch.float32), enabled=amp
        ):
            outputs = self.ddp_model(**model_inputs(batch))
        with torch.no_grad():
            targets = centernet_targets(batch.boxes, batch.num_boxes)
        losses = compute_losses(
            outputs,
            batch,
            targets,
            reduce_sum=all_reduce_sum if self.info.is_distributed else None,
            world_size=self.info.world_size,
        )
        total = sum(self.loss_weights[name] * value for name, value in losses.items())
        stats = torch.stack([total.detach().float(), (~torch.isfinite(total.detach())).float()])
        stats = all_reduce_sum(stats)
        global_total = stats[0] / self.info.world_size
        grad_norm = None
        applied = bool(stats[1] == 0)
        if applied:
            self.scaler.scale(total).backward()
            if self.config.grad_clip_norm > 0 or want_grad_norm:
                self.scaler.unscale_(self.optimizer)
                max_norm = self.config.grad_clip_norm if self.config.grad_clip_norm > 0 else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
            scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.is_enabled() and self.scaler.get_scale() < scale_before:
                applied = False  # inf/nan gradients: GradScaler skipped the update
            else:
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not applied:
            self.skipped += 1
        self._last_targets = targets
        return losses, global_total, outputs, grad_norm, applied

    # --- checkpoints ---
    def save(self, epoch: int) -> Path | None:
        """Write the set of `epoch` (rank 0), then wait for every rank."""
        path = None
        if self.rank0:
            state = ckpt.ResumeState(
                step=self.step,
                epoch=epoch,
                batches_done=self.batches_done,
                steps_per_epoch=self.steps_per_epoch,
                gradient_steps_skipped=self.skipped,
                loader=self.loader.state_dict() if hasattr(self.loader, "state_dict") else None,
                rng=ckpt.rng_state(),
            )
            path = ckpt.save_checkpoint(
                self.logdir,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                state=state,
            )["model"]
            if state.epoch_complete and epoch > 0:
                ckpt.remove_checkpoint(self.logdir, epoch - 1)
        barrier()
        return path

    # --- logging ---
    def _log_scalars(
        self,
        losses: dict[str, torch.Tensor],
        total: float,
        grad_norm: float | None,
        window: dict[str, float],
        outputs: dict,
        batch: Any,
        epoch: int,
        step_idx: int,
    ) -> None:
        names = list(losses)
        values = (
            all_reduce_sum(torch.stack([losses[n].detach().float() for n in names])) / self.info.world_size
        )
        scalars = {f"unscaled_loss/{n}": float(v) for n, v in zip(names, values)}
        scalars.update({f"scaled_loss/{n}": float(v) * self.loss_weights[n] for n, v in zip(names, values)})
        scalars["loss/total"] = total
        elapsed = max(window["time_s"], 1e-9)
        scalars.update(
            {
                "debug/lr": self.optimizer.param_groups[0]["lr"],
                "debug/epoch": epoch,
                "debug/gradient_steps_skipped": self.skipped,
                "debug/grad_scale": self.scaler.get_scale() if self.scaler.is_enabled() else 1.0,
                "perf/samples_per_s": window["samples"] / elapsed,
                "perf/data_wait_share": window["wait_s"] / elapsed,
            }
        )
        if grad_norm is not None:
            scalars["debug/grad_norm"] = grad_norm
        if hasattr(self.loader, "telemetry"):
            telemetry = self.loader.telemetry()
            scalars["loader/pads"] = float(telemetry.get("pads", 0))
            scalars["loader/skipped"] = float(telemetry.get("skipped", 0))
        if self.device.type == "cuda":
            scalars["debug/max_gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        scalars.update({f"metric/{k}": v for k, v in planning_metrics(outputs, batch).items()})
        self.metrics.log(scalars, step_idx)

    def _log_images(self, batch: Any, outputs: dict, step_idx: int) -> None:
        if not (self.rank0 and self.config.visualize_training):
            return
        from lead_stream.visualize import bev_image, camera_image

        self.metrics.log_image("viz/bev", bev_image(batch, outputs, self._last_targets.heatmap), step_idx)
        self.metrics.log_image("viz/camera", camera_image(batch, outputs), step_idx)

    # --- the loop ---
    def fit(self) -> TrainSummary:
        from tqdm import tqdm

        config = self.config
        total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        start_step = self.step
        losses_seen: list[tuple[int, float]] = []
        window = {"time_s": 0.0, "wait_s": 0.0, "samples": 0.0}
        run = {"time_s": 0.0, "wait_s": 0.0, "samples": 0.0}
        epochs_completed = self.start_epoch
        last_checkpoint = None
        bar = tqdm(
            total=total_steps,
            initial=self.step,
            disable=not (self.rank0 and config.progress),
            desc=config.phase,
            dynamic_ncols=True,
        )
        epoch = self.start_epoch
        stop = self.step >= total_steps
        while epoch < config.epochs and not stop:
            if self.batches_done == 0:
                self.loader.set_epoch(epoch)
            self.ddp_model.train()
            iterator = iter(self.loader)
            while True:
                t0 = time.perf_counter()
                with torch.random.fork_rng(devices=[]):  # data loading never moves the training RNG
                    batch = next(iterator, None)
                if batch is None:
                    break
                batch = batch.to(self.device, non_blocking=True)
                t_data = time.perf_counter()
                step_idx = self.step
                log_now = step_idx % config.log_scalars_frequency == 0
                losses, total, outputs, grad_norm, _ = self.train_step(batch, want_grad_norm=log_now)
                total_value = float(total)
                self.step += 1
                self.batches_done += 1
                t_end = time.perf_counter()
                samples = batch.size * self.info.world_size
                for acc in (window, run):
                    acc["time_s"] += t_end - t0
                    acc["wait_s"] += t_data - t0
                    acc["samples"] += samples
                losses_seen.append((step_idx, total_value))
                if log_now:
                    self._log_scalars(losses, total_value, grad_norm, window, outputs, batch, epoch, step_idx)
                    bar.set_postfix(
                        loss=f"{total_value:.3f}",
                        sps=f"{window['samples'] / max(window['time_s'], 1e-9):.1f}",
                    )
                    window = {"time_s": 0.0, "wait_s": 0.0, "samples": 0.0}
                if step_idx % config.log_images_frequency == 0 or step_idx == 1:
                    self._log_images(batch, outputs, step_idx)
                bar.update(1)
                stop = self.step >= total_steps
                epoch_end = self.batches_done >= self.steps_per_epoch
                if not epoch_end and (
                    stop or (config.checkpoint_every_steps and self.step % config.checkpoint_every_steps == 0)
                ):
                    last_checkpoint = self.save(epoch) or last_checkpoint
                if stop or epoch_end:
                    break
            del iterator
            if self.batches_done >= self.steps_per_epoch:
                last_checkpoint = self.save(epoch) or last_checkpoint
                epochs_completed = epoch + 1
                epoch += 1
                self.batches_done = 0
        bar.close()
        self.metrics.flush()
        self.metrics.close()
        return TrainSummary(
            logdir=self.logdir,
            phase=config.phase,
            steps=self.step,
            epochs_completed=epochs_completed,
            start_step=start_step,
            losses=losses_seen,
            gradient_steps_skipped=self.skipped,
            samples_per_s=run["samples"] / max(run["time_s"], 1e-9),
            data_wait_share=run["wait_s"] / max(run["time_s"], 1e-9),
            num_parameters=self.num_parameters,
            precision=self.precision,
            device=str(self.device),
            checkpoint=last_checkpoint,
        )


def train(config: TrainConfig, *, loader: Any = None) -> TrainSummary:
    """Train one phase as configured; see the module docstring.

    Args:
        config: the resolved run config (`resolve_config(pretrain_config(), overrides)`).
        loader: optional stand-in for `make_loader(...)` (an object with set_epoch, __iter__, __len__, and
            optionally state_dict/load_state_dict/telemetry); None builds the streaming loader.

    Returns:
        TrainSummary (losses of the steps run here, throughput, newest checkpoint).

    Raises:
        ConfigError: missing logdir/load_file, bad precision/device, empty loader.
        LeadFormatError: missing or inconsistent index/cache (from the loader).
    """
    trainer = Trainer(config, loader=loader)
    try:
        return trainer.fit()
    finally:
        destroy_distributed()
