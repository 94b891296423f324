"""Shard cache (via `make_loader`) → trained TFv6 checkpoints, TensorBoard logs and config.json in `logdir`.

One loop for both phases (LEAD §5): pretrain trains perception only; posttrain (`use_planning_decoder`) loads
the pretrain weights non-strictly, restarts the epoch count and builds a fresh optimizer and scheduler.
AdamW(amsgrad) + CosineAnnealingWarmRestarts(T_0 = steps per epoch, T_mult = 2) stepped every iteration.
Checkpoint sets use LEAD's names and are written at the end of every epoch, every `checkpoint_every_steps`
and when `max_steps` stops the run; `continue_failed_training=true` resumes step-exactly from the newest
complete set (model, optimizer, scheduler, scaler, loader position, RNG).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_stream.core.config import to_dict
from lead_stream.core.errors import ConfigError
from lead_stream.model import centernet_targets, compute_losses
from lead_stream.model.losses import model_losses, planning_metrics
from lead_stream.model.tfv6 import count_parameters
from lead_stream.train import checkpoint as ckpt
from lead_stream.train.augment import augment_batch
from lead_stream.train.components import (
    build_loader,
    build_run_model,
    cache_choice,
    make_optimizer,
    make_scaler,
    make_scheduler,
    run_cache_dir,
    run_config_json,
)
from lead_stream.train.config import TrainConfig
from lead_stream.train.device import AMP_DTYPES, resolve_device, resolve_num_threads, resolve_precision
from lead_stream.train.distributed import (
    all_reduce_sum,
    barrier,
    broadcast_text,
    destroy_distributed,
    dist_info,
    init_distributed,
    is_rank_zero,
    log0,
    wrap_ddp,
)
from lead_stream.train.memory import check_step_memory
from lead_stream.train.metrics import MetricsLogger
from lead_stream.train.run_dir import check_fresh_logdir, check_resume, identity_of, prepare_logdir
from lead_stream.train.step import apply_gradients, contiguous_inputs, step_scalars
from lead_stream.train.summary import ProgressLines, TrainSummary
from lead_stream.train.validation import Validator


class Trainer:
    """Holds the model, optimizer and loader of one run; `fit()` runs the loop."""

    def __init__(self, config: TrainConfig, *, loader: Any = None) -> None:
        if config.logdir is None:
            raise ConfigError("logdir must be set (checkpoints, config.json and TensorBoard go there)")
        if config.load_file is not None and not Path(config.load_file).exists():
            raise ConfigError(f"load_file {config.load_file} does not exist")  # before anything is written
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
        # on every rank, before rank 0 writes anything: one run per logdir, a resume only of this run
        self.identity, self._latest = identity_of(config, broadcast_text(identity_of(config).run_id)), None
        if config.continue_failed_training:
            self._latest = ckpt.find_latest_checkpoint(self.logdir) if self.logdir.is_dir() else None
            if self._latest is not None:
                self.identity = check_resume(self.logdir, self._latest, self.identity)
        else:
            check_fresh_logdir(config)
        barrier()
        self.num_threads, self.threads_reason = resolve_num_threads(
            config.num_threads, num_workers=config.num_workers, ranks_on_host=self.info.local_world_size
        )
        torch.set_num_threads(self.num_threads)
        torch.manual_seed(config.seed)
        self.model = build_run_model(config, self.device)
        self.num_parameters = count_parameters(self.model)
        self.memory = (
            check_step_memory(
                self.model, config=config, device=self.device, precision=self.precision, info=self.info
            )
            if config.check_memory
            else None
        )
        self.cache_dir = run_cache_dir(config) if loader is None else None
        self.loader = (
            loader
            if loader is not None
            else build_loader(config, self.device, self.info.rank, self.info.world_size, self.cache_dir)
        )
        self.validator = (
            Validator(
                config,
                self.loader,
                device=self.device,
                precision=self.precision,
                info=self.info,
                cache_dir=self.cache_dir,
            )
            if config.val_collection is not None
            else None
        )
        self.validation: dict | None = None
        self.validation_step: int | None = None
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the loader yields no batch per epoch (batch_size {config.batch_size} too large?)"
            )
        if self.rank0:  # only now that the run can start (memory, cache and collection checked)
            prepare_logdir(config, self.logdir, run_config_json(config))
        barrier()
        self.optimizer = make_optimizer(config, self.model)
        self.scheduler = make_scheduler(config, self.optimizer, self.steps_per_epoch)
        self.scaler = make_scaler(self.precision, self.device)
        self.step, self.start_epoch, self.batches_done, self.skipped = 0, 0, 0, 0
        self.resume_state = self._restore()
        if config.freeze_backbone:
            self.model.backbone.requires_grad_(False)
        self.ddp_model: nn.Module = self.model
        if self.info.is_distributed:
            self.ddp_model = wrap_ddp(self.model, self.device)
        if config.compile:
            self.ddp_model = torch.compile(self.ddp_model)
        names = model_losses(config.model, use_planning_decoder=config.use_planning_decoder)
        self.loss_weights = config.loss_weights.normalized(names)
        log0(self.start_line())
        self.metrics = MetricsLogger(
            self.logdir,
            enabled=self.rank0,
            use_wandb=config.log_wandb,
            wandb_project=f"lead_{config.phase}",
            run_config=to_dict(config),
            purge_step=self.step if self.resume_state is not None else None,
        )

    def start_line(self) -> str:
        """One line naming the run, where its config went and what it reads."""
        loader = self.loader
        data = ""
        if hasattr(loader, "catalog"):
            data = (
                f", cache {self.cache_dir}, collection "
                f"{loader.config.collection!r} ({loader.catalog.collection_size:,} samples, "
                f"{self.steps_per_epoch} steps per epoch){cache_choice(self.cache_dir)}"
            )
        threads = f", {self.num_threads} torch thread(s) per rank ({self.threads_reason})"
        return f"{self.config.phase} run {self.identity.run_id}: config {self.logdir / 'config.json'}{data}{threads}"

    # --- start / resume ---
    def _restore(self) -> ckpt.ResumeState | None:
        config = self.config
        if config.continue_failed_training:
            state = self._latest
            if state is not None:
                position = ckpt.restore_run(
                    self.logdir,
                    state,
                    model=self.model,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    scaler=self.scaler,
                    loader=self.loader,
                    map_location=self.device,
                )
                self.step, self.skipped = position.step, position.skipped
                self.start_epoch, self.batches_done = position.epoch, position.batches_done
                log0(
                    f"resuming from {self.logdir} at step {self.step} (epoch {self.start_epoch}, "
                    f"batch {self.batches_done})"
                )
                return state
            log0(f"continue_failed_training: no complete checkpoint in {self.logdir}; starting fresh")
        if config.load_file is not None:
            if not Path(config.load_file).exists():
                raise ConfigError(f"load_file {config.load_file} does not exist")
            log0(ckpt.load_initial_weights(self.model, Path(config.load_file), map_location=self.device))
        return None

    # --- one step ---
    def train_step(
        self, batch: Any, *, want_grad_norm: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict, float | None, bool]:
        """Forward, loss, backward and optimizer step on this rank's `batch`.

        Returns:
            (losses, global total loss, outputs, grad norm or None, whether the step was applied).
        """
        batch = self.augment(batch.to(self.device, non_blocking=True))
        amp = self.precision in AMP_DTYPES
        with torch.autocast(
            self.device.type, dtype=AMP_DTYPES.get(self.precision, torch.float32), enabled=amp
        ):
            outputs = self.ddp_model(**contiguous_inputs(batch))
        with torch.no_grad():
            targets = centernet_targets(
                batch.boxes, batch.num_boxes, phantom_peak=self.config.centernet_phantom_peak
            )
        losses = compute_losses(
            outputs,
            batch,
            targets,
            reduce_sum=all_reduce_sum if self.info.is_distributed else None,
            world_size=self.info.world_size,
            per_sample=self.config.model.preset == "lead",
        )
        total = sum(self.loss_weights[name] * value for name, value in losses.items())
        stats = torch.stack([total.detach().float(), (~torch.isfinite(total.detach())).float()])
        stats = all_reduce_sum(stats)
        global_total = stats[0] / self.info.world_size
        grad_norm, applied = None, bool(stats[1] == 0)
        if applied:
            grad_norm, applied = apply_gradients(
                total,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                grad_clip_norm=self.config.grad_clip_norm,
                want_grad_norm=want_grad_norm,
            )
        self.optimizer.zero_grad(set_to_none=True)
        if not applied:
            self.skipped += 1
        self._last_targets = targets
        return losses, global_total, outputs, grad_norm, applied

    def augment(self, batch: Any) -> Any:
        """`batch` with LEAD's colour ops on its images (use_color_aug, model in training mode), else as is.

        Seeded per sample by (seed, epoch, step, route/frame/variant, slot): the same in one process and split
        over ranks, and repeated exactly after a resume.
        """
        if not (self.config.use_color_aug and self.model.training):
            return batch
        epoch = self.step // self.steps_per_epoch
        return augment_batch(
            batch, seed=self.config.seed, epoch=epoch, step=self.step, prob=self.config.use_color_aug_prob
        )

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
                run_id=self.identity.run_id,
                config_sha256=self.identity.config_sha256,
                run_keys=self.identity.keys,
            )
            path = ckpt.save_run_checkpoint(
                self.logdir,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                state=state,
            )
        barrier()
        return path

    # --- validation ---
    def _validate_due(self, *, epoch_end: bool, stop: bool) -> bool:
        if self.validator is None or self.validation_step == self.step:
            return False
        every = self.config.val_every_steps
        return epoch_end or stop or bool(every and self.step % every == 0)

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
        scalars = step_scalars(
            {n: float(v) for n, v in zip(names, values)},
            self.loss_weights,
            total=total,
            grad_norm=grad_norm,
            window=window,
            optimizer=self.optimizer,
            scaler=self.scaler,
            epoch=epoch,
            skipped=self.skipped,
            telemetry=self.loader.telemetry() if hasattr(self.loader, "telemetry") else None,
            max_gpu_mem_gb=(
                torch.cuda.max_memory_allocated(self.device) / 1e9 if self.device.type == "cuda" else None
            ),
        )
        scalars.update({f"metric/{k}": v for k, v in planning_metrics(outputs, batch).items()})
        self.metrics.log(scalars, step_idx)

    def _log_images(self, batch: Any, outputs: dict, step_idx: int) -> None:
        if not (self.rank0 and self.config.visualize_training):
            return
        from lead_stream.evaluate.visualize import bev_image, camera_image

        self.metrics.log_image("viz/bev", bev_image(batch, outputs, self._last_targets.heatmap), step_idx)
        self.metrics.log_image("viz/camera", camera_image(batch, outputs), step_idx)

    # --- the loop ---
    def fit(self) -> TrainSummary:
        from tqdm import tqdm

        config = self.config
        total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        start_step, wall_start = self.step, time.perf_counter()
        losses_seen: list[tuple[int, float]] = []
        window = {"time_s": 0.0, "wait_s": 0.0, "samples": 0.0}
        run = {"time_s": 0.0, "wait_s": 0.0, "samples": 0.0}
        epochs_completed = self.start_epoch
        last_checkpoint = None
        show = self.rank0 and config.progress
        bar = tqdm(
            total=total_steps,
            initial=self.step,
            disable=not (show and sys.stderr.isatty()),
            desc=config.phase,
            dynamic_ncols=True,
        )
        lines = ProgressLines(total_steps, enabled=show and not sys.stderr.isatty())  # logs, not a bar
        epoch = self.start_epoch
        stop = self.step >= total_steps
        if stop:
            log0(
                f"{config.phase}: the run is already at step {self.step} of {total_steps}: nothing to train "
                "(raise epochs= or max_steps= to go on)"
            )
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
                lines.update(self.step, epoch, total_value, samples)
                stop = self.step >= total_steps
                epoch_end = self.batches_done >= self.steps_per_epoch
                if not epoch_end and (
                    stop or (config.checkpoint_every_steps and self.step % config.checkpoint_every_steps == 0)
                ):
                    last_checkpoint = self.save(epoch) or last_checkpoint
                if self._validate_due(epoch_end=epoch_end, stop=stop):
                    self.validation = self.validator.run(
                        self.model, self.metrics, step=self.step, epoch=epoch
                    )
                    self.validation_step = self.step
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
            validation=self.validation,
            validation_step=self.validation_step,
            run_id=self.identity.run_id,
            pipeline_id=self.loader.catalog.pipeline_id if hasattr(self.loader, "catalog") else None,
            collection=getattr(getattr(self.loader, "config", None), "collection", None),
            num_samples=int(run["samples"]),
            wall_s=time.perf_counter() - wall_start,
            num_threads=self.num_threads,
            rank=self.info.rank,
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
