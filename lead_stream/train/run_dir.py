"""A run config + its `logdir` → a run folder that holds exactly one run.

A fresh run (no `continue_failed_training`) refuses a `logdir` that already holds files, naming what is
there, unless `overwrite=true`, which first deletes the files a run writes (checkpoint sets, resume files,
config.json, TensorBoard event files) and leaves anything else. Every checkpoint set records the run's id
and the hash of the keys a resume must keep (`RESUME_FREE_KEYS` are the ones it may change); resuming from
a set of another run, from a folder holding sets of several runs, or with a changed key is a `ConfigError`
that names the run ids or the keys.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lead_stream.core.atomic import atomic_write_text, remove_stale_tmp
from lead_stream.core.config import to_dict
from lead_stream.core.errors import ConfigError
from lead_stream.train.checkpoint import ResumeState, complete_checkpoints
from lead_stream.train.config import TrainConfig
from lead_stream.train.distributed import log0

# keys a resumed run may change: where data and logs go, how fast and how verbosely it runs, when it stops
RESUME_FREE_KEYS = frozenset(
    {
        "carla_root",
        "cache_dir",
        "index_dir",
        "num_workers",
        "num_threads",
        "on_bad_sample",
        "logdir",
        "description",
        "epochs",
        "max_steps",
        "continue_failed_training",
        "overwrite",
        "device",
        "check_memory",
        "checkpoint_every_steps",
        "log_scalars_frequency",
        "log_images_frequency",
        "visualize_training",
        "log_wandb",
        "progress",
    }
)
RUN_FILE_PATTERNS = (
    "model_*.pth",
    "optimizer_*.pth",
    "scheduler_*.pth",
    "scaler_*.pth",
    "gradient_steps_skipped_*.txt",
    "resume_*.json",
    "config.json",
    "events.out.tfevents.*",
)


@dataclass(frozen=True)
class RunIdentity:
    """Who a run is: its id and the keys its checkpoints may only be resumed with."""

    run_id: str  # 12 hex chars, new for every fresh run, kept by its resumes
    config_sha256: str  # sha256 of `keys` as canonical JSON
    keys: dict[str, Any]  # the config minus RESUME_FREE_KEYS


def run_keys(config: TrainConfig) -> dict[str, Any]:
    """The config's keys that a resume must keep (everything but `RESUME_FREE_KEYS`), JSON-able."""
    return {k: v for k, v in to_dict(config).items() if k not in RESUME_FREE_KEYS}


def identity_of(config: TrainConfig, run_id: str | None = None) -> RunIdentity:
    """The identity of `config` under `run_id` (None: a new id)."""
    keys = run_keys(config)
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()
    return RunIdentity(run_id=run_id or uuid.uuid4().hex[:12], config_sha256=digest, keys=keys)


def run_files(logdir: Path) -> list[Path]:
    """The files in `logdir` that a run writes (what `overwrite=true` deletes)."""
    found = {p for pattern in RUN_FILE_PATTERNS for p in Path(logdir).glob(pattern) if p.is_file()}
    return sorted(found)


def check_fresh_logdir(config: TrainConfig) -> None:
    """Refuse to start a fresh run in a `logdir` that holds files (unless `overwrite`).

    Raises:
        ConfigError: `logdir` is not empty; the message lists what is there and the keys that decide.
    """
    logdir = Path(config.logdir)
    if config.overwrite or not logdir.is_dir():
        return
    entries = sorted(p.name for p in logdir.iterdir() if not p.name.endswith(".tmp"))
    if not entries:
        return
    shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
    newest = _newest_run_line(logdir)
    raise ConfigError(
        f"logdir {logdir} is not empty ({shown}){newest}: continue_failed_training=true resumes that run, "
        "overwrite=true deletes its checkpoints, config.json and event files first, or pick a new logdir"
    )


def _newest_run_line(logdir: Path) -> str:
    try:
        states = complete_checkpoints(logdir)
    except (OSError, ValueError, TypeError):
        return ""
    if not states:
        return ""
    state = states[-1]
    return f"; its newest checkpoint is at step {state.step} (epoch {state.epoch}, run {state.run_id})"


def clear_run_files(logdir: Path) -> list[Path]:
    """Delete the run files of `logdir` (`overwrite=true`); returns what was deleted."""
    removed = run_files(logdir)
    for path in sorted(removed, key=lambda p: not p.name.startswith("resume_")):  # resume files first
        path.unlink(missing_ok=True)
    return removed


def check_resume(logdir: Path, state: ResumeState, identity: RunIdentity) -> RunIdentity:
    """Check that the checkpoint `state` of `logdir` belongs to the run `identity` describes.

    Returns:
        The identity the resumed run continues under (the checkpoint's run id).

    Raises:
        ConfigError: `logdir` holds sets of several runs, or a key a resume must keep differs (named).
    """
    runs = {s.run_id for s in complete_checkpoints(logdir)}
    if len(runs) > 1:
        names = ", ".join(sorted(str(r) for r in runs))
        raise ConfigError(
            f"logdir {logdir} holds checkpoints of several runs ({names}); cannot tell which to resume: "
            "move the other run's files away or start over with overwrite=true"
        )
    if state.run_id is None:  # a set written before run ids: nothing to compare
        return identity
    if state.config_sha256 != identity.config_sha256:
        saved = state.run_keys or {}
        changed = sorted(
            k for k in set(saved) | set(identity.keys) if saved.get(k, "<unset>") != identity.keys.get(k)
        )
        details = "; ".join(
            f"{k}: checkpoint {json.dumps(saved.get(k))} != now {json.dumps(identity.keys.get(k))}"
            for k in changed[:5]
        )
        raise ConfigError(
            f"cannot resume run {state.run_id} in {logdir} at step {state.step}: {len(changed)} key(s) "
            f"differ from the checkpointed run ({details}); keep them, or start a new run in another logdir"
        )
    return RunIdentity(run_id=state.run_id, config_sha256=identity.config_sha256, keys=identity.keys)


def prepare_logdir(config: TrainConfig, logdir: Path, config_json: dict[str, Any]) -> None:
    """Rank 0, once the run can start: clear the previous run's files (`overwrite=true`, not resuming), create
    `logdir`, drop temp files of a killed write and write `config.json` (atomically)."""
    if config.overwrite and not config.continue_failed_training:
        removed = clear_run_files(logdir)
        if removed:
            log0(f"overwrite=true: deleted {len(removed)} files of the previous run in {logdir}")
    logdir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(logdir)
    atomic_write_text(logdir / "config.json", json.dumps(config_json, indent=2) + "\n")
