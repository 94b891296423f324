"""One optimizer step and the scalars a step logs: the parts of the training loop that hold no run state.

`contiguous_inputs` turns a batch into the model's inputs, `apply_gradients` takes one AMP-aware AdamW step
(skipping non-finite ones, as LEAD's GradScaler does), and `step_scalars` names what TensorBoard gets for a
logged step (LEAD's `unscaled_loss/*`, `scaled_loss/*`, `debug/*` plus lead-stream's `perf/*`, `loader/*`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lead_stream.model import model_inputs


def contiguous_inputs(batch: Any) -> dict[str, Any]:
    """The model's inputs of `batch`, each tensor contiguous: the loader's rgb is a (B, 3, H, W) view of
    (B, H, W, 3) pixels, and convolutions on such views give weight gradients other strides than the
    weights (DDP then warns, and copies, on every run)."""
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in model_inputs(batch).items()}


def apply_gradients(
    total: torch.Tensor,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    grad_clip_norm: float,
    want_grad_norm: bool,
) -> tuple[float | None, bool]:
    """Backward of `total` (a finite scalar loss), clip, step optimizer and scheduler.

    Returns:
        (grad norm before clipping, or None when neither clipping nor `want_grad_norm` asked for it;
        whether the update was applied — False when GradScaler found inf/nan gradients and skipped it,
        in which case the scheduler does not step either).
    """
    scaler.scale(total).backward()
    grad_norm = None
    if grad_clip_norm > 0 or want_grad_norm:
        scaler.unscale_(optimizer)
        max_norm = grad_clip_norm if grad_clip_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
    scaler.step(optimizer)
    scaler.update()
    if scaler.is_enabled() and scaler.get_scale() < scale_before:
        return grad_norm, False  # inf/nan gradients: GradScaler skipped the update
    scheduler.step()
    return grad_norm, True


def step_scalars(
    losses: dict[str, float],
    loss_weights: dict[str, float],
    *,
    total: float,
    grad_norm: float | None,
    window: dict[str, float],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    epoch: int,
    skipped: int,
    telemetry: dict | None,
    max_gpu_mem_gb: float | None,
) -> dict[str, float]:
    """The TensorBoard scalars of one logged step.

    Args:
        losses: each loss averaged over ranks (unweighted).
        loss_weights: the normalised weight of each loss.
        window: time_s / wait_s / samples since the last logged step (all ranks' samples).
        telemetry: the loader's counters (pads, skipped) or None.
    """
    scalars = {f"unscaled_loss/{n}": v for n, v in losses.items()}
    scalars.update({f"scaled_loss/{n}": v * loss_weights[n] for n, v in losses.items()})
    scalars["loss/total"] = total
    elapsed = max(window["time_s"], 1e-9)
    scalars.update(
        {
            "debug/lr": optimizer.param_groups[0]["lr"],
            "debug/epoch": epoch,
            "debug/gradient_steps_skipped": skipped,
            "debug/grad_scale": scaler.get_scale() if scaler.is_enabled() else 1.0,
            "perf/samples_per_s": window["samples"] / elapsed,
            "perf/data_wait_share": window["wait_s"] / elapsed,
        }
    )
    if grad_norm is not None:
        scalars["debug/grad_norm"] = grad_norm
    if telemetry is not None:
        scalars["loader/pads"] = float(telemetry.get("pads", 0))
        scalars["loader/skipped"] = float(telemetry.get("skipped", 0))
    if max_gpu_mem_gb is not None:
        scalars["debug/max_gpu_mem_gb"] = max_gpu_mem_gb
    return scalars
