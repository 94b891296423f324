"""Training on the shared synthetic shards: learning, LEAD checkpoints, phases, exact resume, logging."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from train_helpers import TINY, tensorboard_scalars
from typer.testing import CliRunner

from lead_stream.cli.main import app
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.model.random_batch import FixedBatchLoader, random_batch
from lead_stream.train import Trainer, posttrain_config, pretrain_config, resolve_config, train
from lead_stream.train.checkpoint import checkpoint_paths, find_latest_checkpoint
from lead_stream.train.device import resolve_precision


def _tags(logdir: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc.Tags()


def test_loss_falls_when_overfitting_two_real_batches(sharded_root, tmp_path):
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=4, num_workers=0))
    loader.set_epoch(0)
    iterator = iter(loader)
    batches = [next(iterator), next(iterator)]
    cfg = resolve_config(
        pretrain_config(),
        [
            f"logdir={tmp_path}",
            "epochs=1",
            "batch_size=4",
            "lr=3e-3",
            *TINY,
            "visualize_training=false",
            "log_scalars_frequency=10",
        ],
    )
    summary = train(cfg, loader=FixedBatchLoader(batches, steps_per_epoch=20))
    losses = [loss for _, loss in summary.losses]
    assert len(losses) == 20 and summary.gradient_steps_skipped == 0
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses


def test_pretrain_then_posttrain_writes_lead_checkpoints_and_reuses_weights(sharded_root, tmp_path):
    runner = CliRunner()
    pre = tmp_path / "pre"
    common = [f"carla_root={sharded_root}", "batch_size=4", "epoch_size=8", *TINY]
    result = runner.invoke(app, ["train", "pretrain", f"logdir={pre}", "epochs=2", *common])
    assert result.exit_code == 0, result.output
    assert re.search(r"pretrain run [0-9a-f]{12}: 4 steps \(2 epochs\), 16 samples in ", result.output)
    # LEAD names, previous epoch removed, everything loadable with weights_only=True
    names = sorted(p.name for p in pre.iterdir() if not p.name.startswith("events."))
    assert names == [
        "config.json",
        "gradient_steps_skipped_0001.txt",
        "model_0001.pth",
        "optimizer_0001.pth",
        "resume_0001.json",
        "scaler_0001.pth",
        "scheduler_0001.pth",
    ]
    for part in ("model", "optimizer", "scheduler", "scaler"):
        torch.load(pre / f"{part}_0001.pth", weights_only=True)
    weights = torch.load(pre / "model_0001.pth", weights_only=True)
    assert not any(k.startswith("planning_decoder") for k in weights)
    assert (pre / "gradient_steps_skipped_0001.txt").read_text().strip() == "0"
    resume = json.loads((pre / "resume_0001.json").read_text())
    assert resume["step"] == 4 and resume["batches_done"] == resume["steps_per_epoch"] == 2
    assert json.loads((pre / "config.json").read_text())["model"]["widths"] == [8, 16, 32, 32]
    tags = _tags(pre)
    for tag in (
        "loss/total",
        "unscaled_loss/loss_semantic",
        "unscaled_loss/loss_center_net_heatmap",
        "scaled_loss/radar_loss",
        "debug/lr",
        "debug/grad_norm",
        "debug/gradient_steps_skipped",
        "perf/samples_per_s",
        "perf/data_wait_share",
        "loader/pads",
        "loader/skipped",
    ):
        assert tag in tags["scalars"], tag
    assert {"viz/bev", "viz/camera"} <= set(tags["images"])
    # posttrain: non-strict load of the pretrain weights (config inherited), fresh optimizer and epoch counter
    post = tmp_path / "post"
    cfg = resolve_config(
        posttrain_config(), [f"logdir={post}", f"load_file={pre / 'model_0001.pth'}", "epochs=1"]
    )
    assert cfg.model.widths == (8, 16, 32, 32) and cfg.use_planning_decoder and cfg.carla_root == sharded_root
    trainer = Trainer(cfg)
    state = trainer.model.state_dict()
    for key, value in weights.items():
        assert torch.equal(state[key], value), key
    assert any(k.startswith("planning_decoder") for k in state)
    assert trainer.step == 0 and trainer.start_epoch == 0 and not trainer.optimizer.state
    assert trainer.scheduler.last_epoch == 0
    summary = trainer.fit()
    assert summary.steps == summary.epochs_completed * 2 and (post / "model_0000.pth").exists()
    assert "unscaled_loss/loss_spatio_temporal_waypoints" in _tags(post)["scalars"]
    assert "metric/waypoints_ade" in _tags(post)["scalars"]


def test_resume_after_kill_continues_the_loss_curve_exactly(sharded_root, tmp_path):
    common = [
        f"carla_root={sharded_root}",
        "batch_size=2",
        "epoch_size=8",
        "epochs=3",
        *TINY,
        "visualize_training=false",
    ]  # 4 steps per epoch; dropout stays on (RNG must be restored)
    reference = train(resolve_config(pretrain_config(), [f"logdir={tmp_path / 'a'}", "max_steps=7", *common]))
    expected = dict(reference.losses)
    run = tmp_path / "b"
    first = train(resolve_config(pretrain_config(), [f"logdir={run}", "max_steps=6", *common]))
    assert [s for s, _ in first.losses] == list(range(6))
    state = find_latest_checkpoint(run)
    assert state is not None and (state.step, state.epoch, state.batches_done) == (6, 1, 2)  # mid-epoch set
    resumed = train(
        resolve_config(
            pretrain_config(), [f"logdir={run}", "max_steps=7", "continue_failed_training=true", *common]
        )
    )
    assert resumed.start_step == 6 and [s for s, _ in resumed.losses] == [6]
    assert resumed.losses[0][1] == pytest.approx(expected[6], rel=1e-6, abs=1e-7)
    # a kill while writing the mid-epoch set of step 7 leaves it incomplete: fall back to the end of epoch 0
    checkpoint_paths(run, 1, step=7)["resume"].unlink()
    again = train(
        resolve_config(
            pretrain_config(), [f"logdir={run}", "max_steps=7", "continue_failed_training=true", *common]
        )
    )
    assert again.start_step == 4 and [s for s, _ in again.losses] == [4, 5, 6]
    for step, loss in again.losses:
        assert loss == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    logged = tensorboard_scalars(
        run, "loss/total"
    )  # TensorBoard curve of the interrupted run == uninterrupted run
    assert sorted(logged) == list(range(7))
    for step, value in logged.items():
        assert value == pytest.approx(expected[step], rel=1e-5), step


class _CrashingLoader(FixedBatchLoader):
    """Raises (like a killed job) when asked for global batch `crash_at`."""

    def __init__(self, *args, crash_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at

    def __iter__(self):
        for batch in super().__iter__():
            if self._epoch * self.steps_per_epoch + self._done - 1 == self.crash_at:
                raise RuntimeError("killed")
            yield batch


def test_crash_resumes_from_the_newest_mid_epoch_checkpoint(tmp_path):
    batches = [random_batch(2, seed=i) for i in range(3)]
    common = ["epochs=2", "batch_size=2", "checkpoint_every_steps=3", *TINY, "visualize_training=false"]
    reference = train(
        resolve_config(pretrain_config(), [f"logdir={tmp_path / 'a'}", *common]),
        loader=FixedBatchLoader(batches, steps_per_epoch=4),
    )
    run = tmp_path / "b"
    with pytest.raises(RuntimeError, match="killed"):
        train(
            resolve_config(pretrain_config(), [f"logdir={run}", *common]),
            loader=_CrashingLoader(batches, steps_per_epoch=4, crash_at=7),
        )
    state = find_latest_checkpoint(run)
    assert (state.step, state.epoch, state.batches_done) == (6, 1, 2)  # saved at step 6, mid-epoch 1
    resumed = train(
        resolve_config(pretrain_config(), [f"logdir={run}", "continue_failed_training=true", *common]),
        loader=FixedBatchLoader(batches, steps_per_epoch=4),
    )
    assert resumed.start_step == 6 and [s for s, _ in resumed.losses] == [6, 7]
    assert [step for step, _ in reference.losses[6:]] == [6, 7]
    assert [loss for _, loss in resumed.losses] == pytest.approx(
        [loss for _, loss in reference.losses[6:]], rel=1e-6
    )


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    bad = random_batch(2, seed=0)
    bad.speed_mps[0] = float("nan")  # a model input (lidar_bev and depth_u8 are uint8, no NaN)
    cfg = resolve_config(
        pretrain_config(),
        [f"logdir={tmp_path}", "epochs=1", "batch_size=2", *TINY, "visualize_training=false"],
    )
    summary = train(cfg, loader=FixedBatchLoader([bad, random_batch(2, seed=1)], steps_per_epoch=2))
    assert summary.gradient_steps_skipped == 1
    assert (tmp_path / "gradient_steps_skipped_0000.txt").read_text().strip() == "1"
    weights = torch.load(tmp_path / "model_0000.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_precision_follows_device_capabilities(monkeypatch):
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
