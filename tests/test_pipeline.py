"""The README's demo path: synth → index → shard → pretrain → posttrain, through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

LEAD_CHECKPOINT_FILES = (
    "model_0000.pth",
    "optimizer_0000.pth",
    "scheduler_0000.pth",
    "scaler_0000.pth",
    "gradient_steps_skipped_0000.txt",
    "config.json",
)


def test_demo_runs_the_whole_pipeline_end_to_end(tmp_path: Path) -> None:
    data_root, logdir = tmp_path / "carla_leaderboard2", tmp_path / "runs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lead_stream.cli",
            "demo",
            str(data_root),
            "--logdir",
            str(logdir),
            "--routes",
            "2",
            "--frames",
            "18",
            "--epochs",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[5/6] posttrain" in done.stdout
    # both phases validated on held-out frames and printed their metrics; eval compared the checkpoints
    assert "pretrain run " in done.stdout and "val @ step" in done.stdout.split("[5/6]")[0].split("[4/6]")[1]
    assert "ADE" in done.stdout.split("[5/6]")[1].split("[6/6]")[0]
    assert "[6/6] eval: evaluated 2 checkpoint(s)" in done.stdout
    assert (logdir / "eval" / "report.html").exists() and (logdir / "eval" / "metrics.json").exists()
    assert (logdir / "posttrain" / "metrics.jsonl").exists()
    assert (data_root / "index" / "buckets" / "posttrain.parquet").exists()
    routes = pl.read_parquet(
        data_root / "index" / "routes.parquet"
    )  # issue 12: the demo writes LEAD's current form
    assert (
        routes["lead_schema"].drop_nulls().unique().to_list() == ["current"]
        and "current LEAD schema" in done.stdout
    )
    assert list((data_root / "cache").glob("*/manifest.json"))
    for phase in ("pretrain", "posttrain"):
        run = logdir / phase
        for name in LEAD_CHECKPOINT_FILES:
            assert (run / name).exists(), f"{phase}: missing {name}"
        state = torch.load(run / "model_0000.pth", weights_only=True)
        assert any(key.startswith("planning") for key in state) == (phase == "posttrain")
        events = EventAccumulator(str(run)).Reload()
        assert any(tag.endswith("total") or "loss" in tag for tag in events.Tags()["scalars"])
