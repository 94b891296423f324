"""Validation inside training (issue 14): held-out frames left out, val/* in TensorBoard and metrics.jsonl."""

from __future__ import annotations

import json

import pytest
from train_helpers import TINY, tensorboard_scalars

from lead_stream.core.errors import ConfigError
from lead_stream.evaluate.evaluator import evaluation_loader
from lead_stream.train import posttrain_config, resolve_config, train
from lead_stream.train.trainer import Trainer

VAL = ["val_collection=town13_heldout_posttrain", "val_buckets=town13"]


def _common(root) -> list[str]:
    return [f"carla_root={root}", "batch_size=4", "use_planning_decoder=true", *TINY]


def test_posttrain_validates_every_n_steps_and_at_the_end_14(heldout_root, tmp_path):
    run = tmp_path / "post"
    overrides = [
        f"logdir={run}",
        "epochs=1",
        "max_steps=4",
        "val_every_steps=2",
        *VAL,
        *_common(heldout_root),
    ]
    summary = train(resolve_config(posttrain_config(), overrides))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    frames = len(
        evaluation_loader(heldout_root, collection="town13_heldout_posttrain", buckets=("town13",)).plan
    )
    for line in lines:
        assert line["collection"] == "town13_heldout_posttrain" and line["buckets"] == ["town13"]
        assert line["metrics"]["num_samples"] == frames  # every held-out frame once
        assert line["metrics"]["planning"]["ade_m"] > 0
        assert set(line["metrics"]) >= {
            "planning",
            "target_speed",
            "bev_semantic",
            "semantic",
            "depth",
            "boxes",
        }
    ade = tensorboard_scalars(run, "val/planning/ade_m")
    assert sorted(ade) == [2, 4]
    assert ade[4] == pytest.approx(lines[1]["metrics"]["planning"]["ade_m"], rel=1e-6)
    assert 0 <= tensorboard_scalars(run, "val/bev_semantic/miou")[4] <= 1
    assert summary.validation_step == 4 and summary.validation["num_samples"] == frames
    assert f"val @ step 4 on {frames} frames: ADE" in summary.one_line()


def test_heldout_frames_are_left_out_of_training_or_refused_14(heldout_root, tmp_path, capsys):
    base = [*VAL, *_common(heldout_root)]
    trainer = Trainer(resolve_config(posttrain_config(), [f"logdir={tmp_path / 'a'}", *base]))
    val_keys = set(trainer.validator.loader.catalog.sample_key[trainer.validator.loader.plan.rows].tolist())
    train_keys = set(trainer.loader.catalog.sample_key[trainer.loader.plan.rows].tolist())
    assert val_keys and not val_keys & train_keys
    assert "(left out of training)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="validation frames of town13_heldout_posttrain\\[town13\\] are in"):
        Trainer(resolve_config(posttrain_config(), [f"logdir={tmp_path / 'b'}", "val_overlap=error", *base]))
    allowed = Trainer(
        resolve_config(posttrain_config(), [f"logdir={tmp_path / 'c'}", "val_overlap=allow", *base])
    )
    assert val_keys <= set(allowed.loader.catalog.sample_key[allowed.loader.plan.rows].tolist())
