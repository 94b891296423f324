"""Checkpoints (model_EEEE.pth) → metrics on the same held-out frames → metrics.json + report.html.

This is `lead-stream eval`. A lead-stream checkpoint brings its run's config.json (model sizes, data root,
validation set); a checkpoint without one (e.g. LEAD's own) is built with `model_preset` and must load
strictly into TFv6 (a planner is present when the weights have `planning_decoder.*`). Every checkpoint is
evaluated on one loader, so several checkpoints are compared on exactly the same frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lead_stream.core.atomic import atomic_write_text
from lead_stream.core.config import from_dict
from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.evaluate.evaluator import EvalResult, evaluate_model, evaluation_loader
from lead_stream.evaluate.metrics import json_safe
from lead_stream.evaluate.report import render_report, summary_rows
from lead_stream.model import ModelConfig, build_model
from lead_stream.model.lead_tfv6 import LEAD_MODEL_KEYS, lead_model_config


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    # --- frames ---
    data_root: Path | None = None  # data root with index/ and cache/; None = the first run's carla_root
    collection: str | None = None  # held-out collection; None = the first run's val_collection
    buckets: tuple[str, ...] | None = None  # its buckets; None = the run's val_buckets (or all)
    max_samples: int | None = None  # evenly spaced subset of the frames; None = all
    # --- execution ---
    batch_size: int = 8  # frames per forward pass
    num_workers: int = 0  # loader worker processes
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available
    # --- report ---
    worst_k: int = 6  # worst frames rendered per checkpoint
    model_preset: Literal["lead", "full", "compact"] = "lead"  # model of a checkpoint without config.json

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.worst_k < 0 or (self.max_samples is not None and self.max_samples < 1):
            raise ConfigError("batch_size and max_samples must be >= 1, worst_k >= 0")


@dataclass
class CheckpointEval:
    label: str  # "<run dir>/<checkpoint stem>"
    checkpoint: Path
    result: EvalResult


@dataclass
class EvalSummary:
    """What `evaluate_checkpoints` wrote."""

    collection: str
    buckets: tuple[str, ...] | None
    evals: list[CheckpointEval]
    metrics_path: Path
    report_path: Path

    def table(self) -> str:
        """The checkpoints side by side, one metric per row."""
        runs = [(e.label, e.result.results) for e in self.evals]
        rows = summary_rows(runs) + [("samples/s", [e.result.samples_per_s for e in self.evals])]
        width = max(len(name) for name, _ in rows)
        cols = [max(12, len(label)) for label, _ in runs]
        lines = [" " * width + "  " + "  ".join(label.rjust(c) for (label, _), c in zip(runs, cols))]
        for name, values in rows:
            cells = "  ".join(("n/a" if v != v else f"{v:.4g}").rjust(c) for v, c in zip(values, cols))
            lines.append(f"{name.ljust(width)}  {cells}")
        return "\n".join(lines)

    def one_line(self) -> str:
        frames = self.evals[0].result.num_samples if self.evals else 0
        return f"evaluated {len(self.evals)} checkpoint(s) on {frames} frames -> {self.metrics_path}, {self.report_path}"


def _run_config(checkpoint: Path) -> dict:
    path = checkpoint.parent / "config.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LeadFormatError(path, f"not JSON ({error})") from None


def load_model(checkpoint: Path, *, preset: str = "lead") -> tuple[nn.Module, dict]:
    """A checkpoint's weights in a TFv6 built from its run's config.json (or `preset`), and that config.

    Raises:
        LeadFormatError: the file is missing, not a state dict, or does not fit the model.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise LeadFormatError(checkpoint, "no such checkpoint file")
    run = _run_config(checkpoint)
    if "model" in run:  # lead-stream's run
        model_config = from_dict(ModelConfig, run["model"])
    elif any(key in run for key in LEAD_MODEL_KEYS):  # LEAD's own run folder
        model_config = lead_model_config(run)
    else:
        model_config = ModelConfig(preset=preset)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a non-checkpoint file
        raise LeadFormatError(
            checkpoint, f"not a torch state dict ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict):
        raise LeadFormatError(checkpoint, f"expected a state dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # weights saved from a DDP wrapper
    planning = any(k.startswith("planning_decoder.") for k in state)
    model = build_model(model_config, use_planning_decoder=planning)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise LeadFormatError(
            checkpoint, f"weights do not fit the TFv6 model: {str(error).splitlines()[1:2]}"
        ) from None
    if missing or unexpected:
        raise LeadFormatError(
            checkpoint,
            f"weights do not fit the TFv6 {model_config.preset} model: {len(missing)} missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})",
        )
    return model, run


def evaluate_checkpoints(
    checkpoints: list[Path], *, out_dir: Path, config: EvalConfig = EvalConfig(), echo=print
) -> EvalSummary:
    """Evaluate each checkpoint on the same held-out frames; write metrics.json and report.html in `out_dir`.

    Args:
        checkpoints: model_EEEE.pth files (one or several runs / epochs).
        out_dir: where metrics.json and report.html go (created).
        config: frames, execution and report settings.
        echo: progress lines.

    Returns:
        The summary (`table()` prints the checkpoints side by side).

    Raises:
        LeadFormatError: a checkpoint, bucket table or cache is missing or unreadable.
        ConfigError: no collection given or known from the run, unknown bucket.
    """
    if not checkpoints:
        raise ConfigError("name at least one checkpoint")
    models = [load_model(Path(c), preset=config.model_preset) for c in checkpoints]
    first = models[0][1]
    collection = config.collection or first.get("val_collection")
    if collection is None:
        raise ConfigError(
            f"{checkpoints[0]}: its run has no val_collection; pass --collection NAME (e.g. town13_heldout_posttrain)"
        )
    buckets = config.buckets
    if buckets is None and config.collection is None and first.get("val_buckets"):
        buckets = tuple(first["val_buckets"])
    data_root = config.data_root or (Path(first["carla_root"]) if "carla_root" in first else None)
    if data_root is None:
        raise ConfigError(f"{checkpoints[0]}: no config.json with carla_root next to it; pass --data-root")
    device = torch.device(
        "cuda"
        if config.device == "auto" and torch.cuda.is_available()
        else (config.device if config.device != "auto" else "cpu")
    )
    loader = evaluation_loader(
        data_root,
        collection=collection,
        buckets=buckets,
        max_samples=config.max_samples,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    evals = []
    for checkpoint, (model, _) in zip(checkpoints, models):
        checkpoint = Path(checkpoint)
        label = f"{checkpoint.parent.name}/{checkpoint.stem}"
        result = evaluate_model(model.to(device), loader, device=device, worst_k=config.worst_k)
        echo(f"{label}: {result.num_samples} frames, {result.samples_per_s:.1f} samples/s")
        evals.append(CheckpointEval(label, checkpoint, result))
        model.cpu()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "data_root": str(data_root),
        "collection": collection,
        "buckets": list(buckets) if buckets else None,
        "checkpoints": [
            {
                "label": e.label,
                "checkpoint": str(e.checkpoint),
                "samples_per_s": e.result.samples_per_s,
                "worst_frames": [
                    {"key": w.key, "error": w.error, "error_name": w.error_name} for w in e.result.worst
                ],
                "metrics": json_safe(e.result.results),
            }
            for e in evals
        ],
    }
    metrics_path, report_path = out_dir / "metrics.json", out_dir / "report.html"
    atomic_write_text(metrics_path, json.dumps(document, indent=2) + "\n")
    subtitle = (
        f"collection {collection}"
        + (f" [{', '.join(buckets)}]" if buckets else "")
        + f" under {data_root}: {evals[0].result.num_samples} frames, each checkpoint on the same frames"
    )
    page = render_report(
        [(e.label, e.result.results) for e in evals],
        [e.result.worst for e in evals],
        title="lead-stream open-loop evaluation",
        subtitle=subtitle,
    )
    atomic_write_text(report_path, page)
    return EvalSummary(collection, buckets, evals, metrics_path, report_path)
