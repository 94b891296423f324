"""Validation under torchrun (issue 14): two gloo ranks count every held-out frame once, as one process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_helpers import TINY


def _metrics(run) -> dict:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])["metrics"]


def test_two_gloo_ranks_give_the_validation_of_one_process_14(heldout_root, tmp_path):
    common = [
        f"carla_root={heldout_root}",
        "batch_size=4",
        "epoch_size=4",
        "epochs=1",
        "max_steps=1",
        "lr=1e-30",  # the one step leaves the weights as initialised: both runs validate the same model
        "weight_decay=0",
        "use_planning_decoder=true",
        "visualize_training=false",
        "val_collection=town13_heldout_posttrain",
        "val_buckets=town13",
        "val_max_samples=7",  # 7 frames in global batches of 4: the last batch has a padding row
        "val_batch_size=4",
        *TINY,
    ]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    cli = [sys.executable, "-m", "lead_stream.cli.main", "train", "posttrain"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cli, f"logdir={single}", *common], capture_output=True, text=True, env=env, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*torchrun, "-m", "lead_stream.cli.main", "train", "posttrain", f"logdir={ddp}", *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _metrics(single), _metrics(ddp)
    assert one["num_samples"] == two["num_samples"] == 7  # the padding row is not counted
    assert two["planning"]["num_samples"] == one["planning"]["num_samples"]
    assert two["target_speed"]["confusion"] == one["target_speed"]["confusion"]
    assert two["boxes"]["num_labels"] == one["boxes"]["num_labels"]
    assert two["radar"]["num_labels"] == one["radar"]["num_labels"]
    assert two["planning"]["displacement_by_step_m"] == pytest.approx(
        one["planning"]["displacement_by_step_m"], rel=1e-5
    )
    for section in ("bev_semantic", "semantic"):
        assert two[section]["iou"] == pytest.approx(one[section]["iou"], rel=1e-5, nan_ok=True)
    assert two["depth"] == pytest.approx(one["depth"], rel=1e-5)
    assert two["boxes"]["ap"] == pytest.approx(one["boxes"]["ap"], abs=1e-6, nan_ok=True)
    assert two["radar"]["ap_by_threshold"] == pytest.approx(one["radar"]["ap_by_threshold"], abs=1e-6)
    assert len(list(ddp.glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs
