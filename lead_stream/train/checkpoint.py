"""Training state ↔ LEAD-named files in the run directory (atomic; loadable with weights_only=True).

Per epoch E (0-based, 4 digits), in `logdir`: model_EEEE.pth (state_dict of the unwrapped module),
optimizer_EEEE.pth, scheduler_EEEE.pth, scaler_EEEE.pth, gradient_steps_skipped_EEEE.txt (LEAD §5.4), plus
resume_EEEE.json (global step, batches done in the epoch, loader state, RNG states) for step-exact resume.
A set is complete only when its resume file exists: a save first deletes the old resume file, writes the
other files (each atomically) and writes the resume file last. Mid-epoch saves overwrite the current
epoch's set; the previous epoch's set is deleted only after the current epoch's end-of-epoch save.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_stream.core.atomic import atomic_path, atomic_write_text, list_finished

PARTS = ("model", "optimizer", "scheduler", "scaler")
_RESUME_RE = re.compile(r"^resume_(\d{4,})\.json$")


def checkpoint_paths(logdir: Path, epoch: int) -> dict[str, Path]:
    """LEAD's file names for `epoch` (plus our resume file)."""
    logdir = Path(logdir)
    paths = {part: logdir / f"{part}_{epoch:04d}.pth" for part in PARTS}
    paths["gradient_steps_skipped"] = logdir / f"gradient_steps_skipped_{epoch:04d}.txt"
    paths["resume"] = logdir / f"resume_{epoch:04d}.json"
    return paths


@dataclass
class ResumeState:
    """Where training stands after `step` optimizer steps (JSON in resume_EEEE.json)."""

    step: int  # global steps done (including skipped ones)
    epoch: int  # epoch of this checkpoint set
    batches_done: int  # batches of `epoch` consumed; == steps_per_epoch when the epoch is complete
    steps_per_epoch: int  # len(loader) when saved
    gradient_steps_skipped: int = 0  # non-finite steps so far
    loader: dict[str, Any] | None = None  # StreamingLoader.state_dict() (None for an injected loader)
    rng: dict[str, Any] = field(default_factory=dict)  # {"torch": [...bytes], "cuda": [[...], ...]}

    @property
    def epoch_complete(self) -> bool:
        return self.batches_done >= self.steps_per_epoch


def rng_state() -> dict[str, Any]:
    """torch CPU (and CUDA) generator states as lists of ints."""
    state: dict[str, Any] = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()` output."""
    if "torch" in state:
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _save_tensor_file(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(
    logdir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    state: ResumeState,
) -> dict[str, Path]:
    """Write the checkpoint set of `state.epoch` (rank 0 only); returns its paths.

    Args:
        logdir: run directory.
        model: the unwrapped module (not the DDP wrapper).
        optimizer, scheduler, scaler: their `state_dict()`s are saved.
        state: resume information, written last.
    """
    paths = checkpoint_paths(logdir, state.epoch)
    paths["resume"].unlink(missing_ok=True)  # the set is incomplete until the resume file is back
    _save_tensor_file(model.state_dict(), paths["model"])
    _save_tensor_file(optimizer.state_dict(), paths["optimizer"])
    _save_tensor_file(scheduler.state_dict(), paths["scheduler"])
    _save_tensor_file(scaler.state_dict(), paths["scaler"])
    atomic_write_text(paths["gradient_steps_skipped"], f"{state.gradient_steps_skipped}\n")
    atomic_write_text(paths["resume"], json.dumps(asdict(state)))
    return paths


def remove_checkpoint(logdir: Path, epoch: int) -> None:
    """Delete the set of `epoch` (resume file first, so a half-deleted set is never taken as complete)."""
    paths = checkpoint_paths(logdir, epoch)
    paths["resume"].unlink(missing_ok=True)
    for path in paths.values():
        path.unlink(missing_ok=True)


def read_resume_state(path: Path) -> ResumeState:
    """Parse a resume_EEEE.json."""
    return ResumeState(**json.loads(Path(path).read_text()))


def find_latest_checkpoint(logdir: Path) -> ResumeState | None:
    """The complete set with the most steps in `logdir` (mid-epoch sets included), or None."""
    best: ResumeState | None = None
    for path in list_finished(Path(logdir), "resume_*.json"):
        match = _RESUME_RE.match(path.name)
        if not match:
            continue
        paths = checkpoint_paths(logdir, int(match.group(1)))
        if not all(p.exists() for p in paths.values()):
            continue
        state = read_resume_state(path)
        if best is None or state.step > best.step:
            best = state
    return best


def load_checkpoint(
    logdir: Path,
    state: ResumeState,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    map_location: torch.device | str = "cpu",
) -> None:
    """Load the set of `state.epoch` into the given objects (strict model load)."""
    paths = checkpoint_paths(logdir, state.epoch)
    model.load_state_dict(
        torch.load(paths["model"], map_location=map_location, weights_only=True), strict=True
    )
    optimizer.load_state_dict(torch.load(paths["optimizer"], map_location=map_location, weights_only=True))
    scheduler.load_state_dict(torch.load(paths["scheduler"], map_location=map_location, weights_only=True))
    scaler.load_state_dict(torch.load(paths["scaler"], map_location=map_location, weights_only=True))


def load_weights(
    model: nn.Module, path: Path, *, strict: bool, map_location: torch.device | str = "cpu"
) -> tuple[list[str], list[str]]:
    """Load a model_EEEE.pth into `model`; returns (missing, unexpected) keys (posttrain: non-strict)."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    result = model.load_state_dict(state, strict=strict)
    return list(result.missing_keys), list(result.unexpected_keys)
