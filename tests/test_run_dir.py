"""Run folders hold one run: a non-empty logdir is refused (or overwritten on request), a resume checks the
checkpoints' run id and keys, mid-epoch sets have their own names (issue 13, point 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import TINY

from lead_stream.core.errors import ConfigError
from lead_stream.model.random_batch import FixedBatchLoader, random_batch
from lead_stream.train import pretrain_config, resolve_config, train
from lead_stream.train.checkpoint import find_latest_checkpoint

COMMON = ["epochs=2", "batch_size=2", *TINY, "visualize_training=false"]


def _batches() -> list:
    return [random_batch(2, seed=i) for i in range(2)]


def _train(run: Path, *extra: str):
    config = resolve_config(pretrain_config(), [f"logdir={run}", *COMMON, *extra])
    return train(config, loader=FixedBatchLoader(_batches(), steps_per_epoch=3))


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if not p.name.startswith("events."))


def test_a_fresh_run_refuses_a_non_empty_logdir_unless_overwrite_13(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, "seed=1")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(
        ConfigError, match=r"not empty \(config\.json, .*continue_failed_training=true.*overwrite=true"
    ):
        _train(run, "seed=2")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing touched
    (run / "notes.txt").write_text("mine")
    summary = _train(run, "seed=2", "overwrite=true", "epochs=1")
    assert summary.steps == 3
    assert _names(run) == [
        "config.json",
        "gradient_steps_skipped_0000.txt",
        "model_0000.pth",
        "notes.txt",  # not a run file: kept
        "optimizer_0000.pth",
        "resume_0000.json",
        "scaler_0000.pth",
        "scheduler_0000.pth",
    ]  # the old run's model_0001.pth and its event file are gone
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


def test_resume_refuses_checkpoints_of_another_run_or_changed_keys_13(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, "max_steps=4")
    state = find_latest_checkpoint(run)
    assert state.run_id and len(state.config_sha256) == 64 and state.run_keys["seed"] == 0
    with pytest.raises(ConfigError, match=r"1 key\(s\) differ.*lr: checkpoint 0.0003 != now 0.001"):
        _train(run, "continue_failed_training=true", "lr=1e-3")
    resumed = _train(run, "continue_failed_training=true", "max_steps=5", "num_workers=1")
    assert resumed.start_step == 4 and find_latest_checkpoint(run).run_id == state.run_id
    # a set of another run copied in: which one is "this run" cannot be told
    other = tmp_path / "other"
    _train(other, "epochs=1")
    for path in other.glob("*_0000.*"):
        (run / path.name).write_bytes(path.read_bytes())
    (run / "resume_0000.json").write_text(
        json.dumps({**json.loads((other / "resume_0000.json").read_text()), "step": 3})
    )
    with pytest.raises(ConfigError, match="checkpoints of several runs"):
        _train(run, "continue_failed_training=true", "max_steps=6")


def test_mid_epoch_sets_have_their_own_names_and_end_of_epoch_keeps_leads_13(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, "checkpoint_every_steps=2", "max_steps=5")
    # step 2 (mid epoch 0), step 3 (end of epoch 0), step 4 (mid epoch 1), step 5 (max_steps, mid epoch 1)
    assert _names(run) == [
        "config.json",
        "gradient_steps_skipped_0000.txt",
        "gradient_steps_skipped_0001_step_0000005.txt",
        "model_0000.pth",
        "model_0001_step_0000005.pth",
        "optimizer_0000.pth",
        "optimizer_0001_step_0000005.pth",
        "resume_0000.json",
        "resume_0001_step_0000005.json",
        "scaler_0000.pth",
        "scaler_0001_step_0000005.pth",
        "scheduler_0000.pth",
        "scheduler_0001_step_0000005.pth",
    ]
    state = find_latest_checkpoint(run)
    assert (state.step, state.epoch, state.batches_done) == (5, 1, 2)
    _train(run, "continue_failed_training=true")  # to the end of epoch 1: LEAD's names only
    assert [n for n in _names(run) if n.startswith("model_")] == ["model_0001.pth"]
    assert not list(run.glob("*_step_*"))
