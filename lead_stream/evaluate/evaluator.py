"""A model + a held-out loader → open-loop metrics over every held-out frame once (all ranks together).

The loader serves the frames in a fixed order, normal sensors only, sharded over ranks (`evaluation_loader`):
each rank runs the model on its part, padding rows are dropped (`StreamingLoader.real_samples`), and one
all-reduce of the metric sums gives every rank the global result. Optionally the `worst_k` frames (largest
per-sample error) are rendered as pictures for the report (camera with projected waypoints, BEV panels).
"""

from __future__ import annotations

import dataclasses
import heapq
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from lead_stream.evaluate.adapter import labels_from_batch, predictions_from_outputs
from lead_stream.evaluate.metrics import OpenLoopMetrics, sample_errors
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.model import centernet_targets, model_inputs


@dataclass(frozen=True)
class WorstFrame:
    """One badly predicted frame, rendered."""

    key: str  # "<route_id>/<frame_idx:04d>"
    error: float  # the per-sample error it was ranked by (`sample_errors`)
    error_name: str  # what `error` measures
    camera_png: bytes  # camera panel: rgb + expert (green) / predicted (red) waypoints, semantics below
    bev_png: bytes  # BEV panel: LiDAR + boxes + waypoints | label | prediction | heatmaps


@dataclass
class EvalResult:
    """Metrics of one model on one held-out set."""

    results: dict  # `OpenLoopMetrics.compute()` (global over ranks)
    num_samples: int  # frames evaluated (every frame once)
    wall_s: float  # seconds of the whole pass on this rank
    samples_per_s: float  # global frames / wall_s
    worst: list[WorstFrame] = field(default_factory=list)  # by descending error (rank 0's frames)


def evaluation_loader(
    data_root: Path,
    *,
    collection: str,
    buckets: tuple[str, ...] | None = None,
    max_samples: int | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    cache_dir: Path | None = None,
    pin_memory: bool = False,
) -> Any:
    """The deterministic loader of a held-out set: each frame once, (route, frame) order, normal sensors.

    Args:
        data_root: data root with index/ and cache/.
        collection: the bucket collection the frames come from.
        buckets: only these buckets of it; None = all.
        max_samples: an evenly spaced subset of this many frames; None = all.
        batch_size: global batch over all ranks.
        num_workers: loader workers per rank.
        rank: this process's rank.
        world_size: number of ranks.
        cache_dir: a specific cache; None = the newest complete one.
        pin_memory: pin host batches (CUDA).

    Raises:
        LeadFormatError: missing bucket table or cache.
        ConfigError: unknown bucket, or no frame.
    """
    config = LoaderConfig(
        batch_size=batch_size,
        collection=collection,
        buckets=buckets,
        epoch_size=max_samples,
        order="sequential",
        perturbation_prob=0.0,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
    return make_loader(data_root, config=config, rank=rank, world_size=world_size, cache_dir=cache_dir)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _render(batch: Any, outputs: dict, idx: int, key: str, error: float, name: str) -> WorstFrame:
    from lead_stream.evaluate.visualize import bev_image, camera_image

    heatmap = centernet_targets(batch.boxes[idx : idx + 1], batch.num_boxes[idx : idx + 1]).heatmap
    single = {k: v[idx : idx + 1] for k, v in outputs.items()}
    sample = dataclasses.replace(
        batch, **{f.name: getattr(batch, f.name)[idx : idx + 1] for f in dataclasses.fields(batch)}
    )
    return WorstFrame(
        key, error, name, _png(camera_image(sample, single)), _png(bev_image(sample, single, heatmap))
    )


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    worst_k: int = 0,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run `model` over one epoch of `loader` and compute every metric its outputs allow.

    Args:
        model: a TFv6 (unwrapped); put in eval mode for the pass and restored afterwards.
        loader: an `evaluation_loader` (needs `set_epoch`, iteration and `real_samples`).
        device: where the model runs.
        autocast_dtype: bf16 / fp16 autocast as in training; None = fp32.
        reduce_sum: sums a tensor over ranks (all-reduce); None for one process.
        worst_k: render this many worst frames (rank 0 keeps its own; 0 = none).
        progress: called with the number of samples after each batch.

    Returns:
        The global metrics, throughput and the worst frames.
    """
    was_training = model.training
    model.eval()
    metrics = OpenLoopMetrics(device)
    heap: list[tuple[float, int, WorstFrame]] = []
    loader.set_epoch(0)
    t0 = time.perf_counter()
    for batch_idx, host_batch in enumerate(loader):
        batch = host_batch.to(device, non_blocking=True)
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            outputs = model(**model_inputs(batch))
        real = torch.as_tensor(loader.real_samples(batch_idx), device=device)
        pred, label = predictions_from_outputs(outputs), labels_from_batch(batch)
        metrics.update(pred.rows(real), label.rows(real))
        if worst_k:
            errors, name = sample_errors(pred, label)
            for idx in torch.nonzero(real & torch.isfinite(errors)).flatten().tolist():
                error = float(errors[idx])
                if len(heap) < worst_k or error > heap[0][0]:
                    key = f"{batch.route_id[idx]}/{int(batch.frame_idx[idx]):04d}"
                    item = (
                        error,
                        len(heap) + batch_idx * 100_000 + idx,
                        _render(batch, outputs, idx, key, error, name),
                    )
                    (heapq.heappush if len(heap) < worst_k else heapq.heapreplace)(heap, item)
        if progress is not None:
            progress(int(real.sum()))
    if reduce_sum is not None:
        metrics.reduce(reduce_sum)
    wall = time.perf_counter() - t0
    if was_training:
        model.train()
    results = metrics.compute()
    worst = [frame for _, _, frame in sorted(heap, key=lambda item: -item[0])]
    num = results["num_samples"]
    return EvalResult(
        results=results, num_samples=num, wall_s=wall, samples_per_s=num / max(wall, 1e-9), worst=worst
    )
