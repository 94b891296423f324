"""Two gloo ranks under torchrun match one process on the same global batch (STYLE E18 b)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from train_helpers import TINY, tensorboard_scalars
from typer.testing import CliRunner

from lead_stream.cli.main import app


def test_two_ranks_match_one_process_and_only_rank0_writes(sharded_root, tmp_path):
    common = [
        f"carla_root={sharded_root}",
        "batch_size=4",
        "epoch_size=8",
        "epochs=1",
        "max_steps=2",
        "model.dropout=0",
        "visualize_training=false",
        *TINY,
    ]
    single = tmp_path / "single"
    result = CliRunner().invoke(app, ["train", "pretrain", f"logdir={single}", *common])
    assert result.exit_code == 0, result.output
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "lead_stream.cli.main",
            "train",
            "pretrain",
            f"logdir={ddp}",
            *common,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # issue 13: one summary line (rank 0), one start line, no warning printed on every DDP run
    assert len(done.stdout.strip().splitlines()) == 1 and done.stdout.startswith("pretrain run ")
    assert done.stderr.count("pretrain run ") == 1
    for warning in ("Grad strides do not match", "broadcast_buffers", "Warning"):
        assert warning not in done.stderr, done.stderr[-3000:]
    one, two = tensorboard_scalars(single, "loss/total"), tensorboard_scalars(ddp, "loss/total")
    assert sorted(one) == sorted(two) == [0, 1]
    assert two[0] == pytest.approx(one[0], rel=1e-5)  # same global batch, same init
    assert two[1] == pytest.approx(one[1], rel=1e-4)  # after one DDP-averaged update
    assert len(list(ddp.glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs ...
    assert sorted(p.name for p in ddp.glob("*.pth")) == [
        "model_0000.pth",
        "optimizer_0000.pth",
        "scaler_0000.pth",
        "scheduler_0000.pth",
    ]  # ... and saves
