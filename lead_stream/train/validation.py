"""A run's held-out frames → per-validation open-loop metrics: val/* scalars and `<logdir>/metrics.jsonl`.

`Validator` builds this rank's validation loader (fixed order, normal sensors, each frame once over all
ranks), says how the held-out frames relate to the training collection (`val_overlap`), and `run()`
evaluates the unwrapped model on every rank, reduces the sums, logs `val/<section>/<metric>` to
TensorBoard and appends one JSON line per validation to metrics.jsonl on rank 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_stream.evaluate.evaluator import evaluate_model
from lead_stream.evaluate.metrics import flat_scalars, json_safe
from lead_stream.train.components import build_val_loader, check_overlap
from lead_stream.train.config import TrainConfig
from lead_stream.train.device import AMP_DTYPES
from lead_stream.train.distributed import DistInfo, all_reduce_sum, log0
from lead_stream.train.metrics import MetricsLogger

METRICS_FILE = "metrics.jsonl"  # one JSON line per validation: step, epoch, collection, the results dict


class Validator:
    """Validation of one run; see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        train_loader: Any,
        *,
        device: torch.device,
        precision: str,
        info: DistInfo,
        cache_dir: Path | None = None,
    ) -> None:
        self.config, self.device, self.info = config, device, info
        self.autocast_dtype = AMP_DTYPES.get(precision)
        self.loader = build_val_loader(config, device, info.rank, info.world_size, cache_dir)
        if hasattr(train_loader, "catalog"):  # the streaming loader (an injected stand-in has no frames)
            log0(check_overlap(config, train_loader, self.loader))
        self.path = Path(config.logdir) / METRICS_FILE

    def run(self, model: nn.Module, logger: MetricsLogger, *, step: int, epoch: int) -> dict:
        """Evaluate `model` (unwrapped) on the held-out frames; every rank returns the global results."""
        with torch.random.fork_rng(devices=[]):  # validation never moves the training RNG
            result = evaluate_model(
                model,
                self.loader,
                device=self.device,
                autocast_dtype=self.autocast_dtype,
                reduce_sum=all_reduce_sum if self.info.is_distributed else None,
            )
        scalars = {f"val/{name}": value for name, value in flat_scalars(result.results).items()}
        scalars["val/samples_per_s"] = result.samples_per_s
        logger.log(scalars, step)
        if self.info.rank == 0:
            line = {
                "step": step,
                "epoch": epoch,
                "phase": self.config.phase,
                "collection": self.config.val_collection,
                "buckets": list(self.config.val_buckets) if self.config.val_buckets else None,
                "samples_per_s": result.samples_per_s,
                "metrics": json_safe(result.results),
            }
            with open(self.path, "a") as out:  # one whole line per validation, flushed on close
                out.write(json.dumps(line) + "\n")
        return result.results
