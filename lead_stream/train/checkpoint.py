"""Training state ↔ LEAD-named files in the run directory (atomic; loadable with weights_only=True).

At the end of epoch E (0-based, 4 digits), in `logdir`: model_EEEE.pth (state_dict of the unwrapped module),
optimizer_EEEE.pth, scheduler_EEEE.pth, scaler_EEEE.pth, gradient_steps_skipped_EEEE.txt (LEAD §5.4, LEAD's
names), plus resume_EEEE.json (global step, batches done in the epoch, loader state, RNG states, run id and
config hash) for step-exact resume. A mid-epoch set (every `checkpoint_every_steps`, or at `max_steps`) has
the global step in every name, `model_EEEE_step_SSSSSSS.pth` ... `resume_EEEE_step_SSSSSSS.json`, so it is
never mistaken for an end-of-epoch set. A set is complete only when its resume file exists: a save first
deletes the old resume file, writes the other files (each atomically) and writes the resume file last. Only
the newest mid-epoch set is kept; an end-of-epoch save removes the mid-epoch sets and the previous epoch's set.
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
_RESUME_RE = re.compile(r"^resume_(\d{4,})(?:_step_(\d{7,}))?\.json$")


def checkpoint_paths(logdir: Path, epoch: int, step: int | None = None) -> dict[str, Path]:
    """LEAD's file names for the end of `epoch` (plus our resume file); with `step`, the mid-epoch set's."""
    logdir = Path(logdir)
    tag = f"{epoch:04d}" if step is None else f"{epoch:04d}_step_{step:07d}"
    paths = {part: logdir / f"{part}_{tag}.pth" for part in PARTS}
    paths["gradient_steps_skipped"] = logdir / f"gradient_steps_skipped_{tag}.txt"
    paths["resume"] = logdir / f"resume_{tag}.json"
    return paths


def state_paths(logdir: Path, state: ResumeState) -> dict[str, Path]:
    """The file names of the set `state` describes (end-of-epoch or mid-epoch)."""
    return checkpoint_paths(logdir, state.epoch, None if state.epoch_complete else state.step)


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
    run_id: str | None = None  # the run that wrote the set (None: written before run ids existed)
    config_sha256: str | None = None  # hash of the run's keys that a resume must keep (`run_dir`)
    run_keys: dict[str, Any] | None = None  # those keys, to name the ones that differ

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
    paths = state_paths(logdir, state)
    paths["resume"].unlink(missing_ok=True)  # the set is incomplete until the resume file is back
    _save_tensor_file(model.state_dict(), paths["model"])
    _save_tensor_file(optimizer.state_dict(), paths["optimizer"])
    _save_tensor_file(scheduler.state_dict(), paths["scheduler"])
    _save_tensor_file(scaler.state_dict(), paths["scaler"])
    atomic_write_text(paths["gradient_steps_skipped"], f"{state.gradient_steps_skipped}\n")
    atomic_write_text(paths["resume"], json.dumps(asdict(state)))
    return paths


def remove_checkpoint(logdir: Path, epoch: int, step: int | None = None) -> None:
    """Delete the set of `epoch` (or its mid-epoch set at `step`); the resume file first, so a half-deleted
    set is never taken as complete."""
    paths = checkpoint_paths(logdir, epoch, step)
    paths["resume"].unlink(missing_ok=True)
    for path in paths.values():
        path.unlink(missing_ok=True)


def remove_mid_epoch_checkpoints(logdir: Path, *, keep_step: int | None = None) -> None:
    """Delete every mid-epoch set in `logdir` except the one at global step `keep_step`."""
    for epoch, step in resume_file_tags(logdir):
        if step is not None and step != keep_step:
            remove_checkpoint(logdir, epoch, step)


def resume_file_tags(logdir: Path) -> list[tuple[int, int | None]]:
    """(epoch, step or None) of every resume file in `logdir`."""
    tags = []
    for path in list_finished(Path(logdir), "resume_*.json"):
        match = _RESUME_RE.match(path.name)
        if match:
            tags.append((int(match.group(1)), int(match.group(2)) if match.group(2) else None))
    return tags


def read_resume_state(path: Path) -> ResumeState:
    """Parse a resume_EEEE.json (or resume_EEEE_step_SSSSSSS.json)."""
    return ResumeState(**json.loads(Path(path).read_text()))


def complete_checkpoints(logdir: Path) -> list[ResumeState]:
    """Every complete set in `logdir` (end-of-epoch and mid-epoch), fewest steps first."""
    states = []
    for epoch, step in resume_file_tags(logdir):
        paths = checkpoint_paths(logdir, epoch, step)
        if all(p.exists() for p in paths.values()):
            states.append(read_resume_state(paths["resume"]))
    return sorted(states, key=lambda state: state.step)


def find_latest_checkpoint(logdir: Path) -> ResumeState | None:
    """The complete set with the most steps in `logdir` (mid-epoch sets included), or None."""
    states = complete_checkpoints(logdir)
    return states[-1] if states else None


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
    """Load the set `state` describes into the given objects (strict model load)."""
    paths = state_paths(logdir, state)
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


def save_run_checkpoint(
    logdir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    state: ResumeState,
) -> Path:
    """Write the set of `state` and prune what it supersedes: an end-of-epoch set removes every mid-epoch set
    and the previous epoch's set (LEAD keeps one model_EEEE.pth); a mid-epoch set removes older mid-epoch sets.

    Returns:
        the path of the written model file.
    """
    path = save_checkpoint(
        logdir, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, state=state
    )["model"]
    if state.epoch_complete:
        remove_mid_epoch_checkpoints(logdir)
        if state.epoch > 0:
            remove_checkpoint(logdir, state.epoch - 1)
    else:
        remove_mid_epoch_checkpoints(logdir, keep_step=state.step)
    return path


@dataclass(frozen=True)
class RunPosition:
    """Where a resumed run goes on: global step, skipped steps, the epoch to run and batches already done in it."""

    step: int
    skipped: int
    epoch: int
    batches_done: int


def restore_run(
    logdir: Path,
    state: ResumeState,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    loader: Any,
    map_location: Any,
) -> RunPosition:
    """Load the set of `state` into the run's objects (model, optimizer, scheduler, scaler, RNG, and the loader's
    position when the set is mid-epoch) and return where the run goes on."""
    load_checkpoint(
        logdir,
        state,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        map_location=map_location,
    )
    set_rng_state(state.rng)
    if state.epoch_complete:
        return RunPosition(state.step, state.gradient_steps_skipped, state.epoch + 1, 0)
    if state.loader is not None:
        loader.load_state_dict(state.loader)
    return RunPosition(state.step, state.gradient_steps_skipped, state.epoch, state.batches_done)


def load_initial_weights(model: nn.Module, path: Path, *, map_location: Any) -> str:
    """Load `path` (e.g. the pretrain checkpoint into a posttrain model) non-strictly; returns the line to log."""
    missing, unexpected = load_weights(model, path, strict=False, map_location=map_location)
    new = sorted({key.split(".")[0] for key in missing})
    return (
        f"loaded {path}: {len(missing)} missing keys (new modules: {new}), {len(unexpected)} unexpected keys"
    )
