"""Preset lead = LEAD's own TFv6: state-dict layout against LEAD's list, strict loads both ways, checkpoints
a LEAD agent can read, ImageNet initialisation, LEAD's per-sample loss normalisation, head switches."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.evaluate.visualize import bev_image, camera_image
from lead_stream.model import ModelConfig, build_model, compute_losses, model_inputs
from lead_stream.model.lead_tfv6 import lead_state_dict_layout
from lead_stream.model.losses import model_losses
from lead_stream.model.pretrained import load_image_pretrained, offline_message
from lead_stream.model.random_batch import FixedBatchLoader, random_batch
from lead_stream.model.targets import centernet_targets
from lead_stream.train import Trainer, posttrain_config, pretrain_config, resolve_config

LEAD_LAYOUT = json.loads((Path(__file__).parent / "assets" / "lead_tfv6_state_dict.json").read_text())
PHASES = [("pretrain", False), ("posttrain", True)]


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.removeprefix("torch."))


class LayoutModule(nn.Module):
    """A module with exactly the fixture's state-dict entries (a shape-only stand-in for LEAD's TFv6)."""

    def __init__(self, rows: list[list]) -> None:
        super().__init__()
        for name, shape, dtype in rows:
            *path, leaf = name.split(".")
            module: nn.Module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_buffer(leaf, torch.zeros(shape, dtype=_dtype(dtype)))


def _lead_checkpoint(rows: list[list], seed: int) -> dict[str, torch.Tensor]:
    """A state dict in LEAD's layout (what LEAD's trainer would save), every tensor its own constant value."""
    return {
        name: torch.full(shape, float(seed + idx) / len(rows), dtype=_dtype(dtype))
        if _dtype(dtype).is_floating_point
        else torch.full(shape, seed + idx, dtype=_dtype(dtype))
        for idx, (name, shape, dtype) in enumerate(rows)
    }


def _timm_resnet34_file(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """A generated ResNet34 weight file in timm's naming (with its classifier), as .pth or .safetensors."""
    encoder = build_model(
        ModelConfig(image_pretrained="none"), use_planning_decoder=False
    ).backbone.image_encoder
    g = torch.Generator().manual_seed(seed)
    weights = {
        name: torch.randn(t.shape, generator=g).to(t.dtype) for name, t in encoder.state_dict().items()
    }
    weights["fc.weight"], weights["fc.bias"] = torch.randn(1000, 512, generator=g), torch.zeros(1000)
    if path.suffix == ".safetensors":
        header, blobs, offset = {}, [], 0
        names = {torch.float32: "F32", torch.int64: "I64"}
        for name, tensor in weights.items():
            blob = tensor.contiguous().numpy().tobytes()
            header[name] = {
                "dtype": names[tensor.dtype],
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + len(blob)],
            }
            blobs.append(blob)
            offset += len(blob)
        head = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    else:
        torch.save(weights, path)
    return weights


@pytest.mark.parametrize(("phase", "planning"), PHASES)
def test_lead_preset_state_dict_equals_leads_own_list_11(phase, planning):
    model = build_model(ModelConfig(image_pretrained="none"), use_planning_decoder=planning)
    ours = [[name, list(shape), dtype] for name, shape, dtype in lead_state_dict_layout(model)]
    assert LEAD_LAYOUT["lead_commit"] == "4489176"
    assert len(ours) == {"pretrain": 736, "posttrain": 866}[phase]
    assert ours == LEAD_LAYOUT[phase]  # names, shapes, dtypes and order


def test_lead_checkpoints_load_strictly_both_ways_11(tmp_path):
    phase, planning = "posttrain", True  # the pretrain layout is the posttrain one less planning_decoder.*
    torch.manual_seed(0)
    ours = build_model(ModelConfig(image_pretrained="none"), use_planning_decoder=planning)
    torch.save(ours.state_dict(), tmp_path / "model_0000.pth")
    loaded = torch.load(tmp_path / "model_0000.pth", weights_only=True)
    LayoutModule(LEAD_LAYOUT[phase]).load_state_dict(loaded, strict=True)  # LEAD's layout takes ours
    lead_state = _lead_checkpoint(LEAD_LAYOUT[phase], seed=1)
    torch.save(lead_state, tmp_path / "model_0030.pth")
    fresh = build_model(ModelConfig(image_pretrained="none"), use_planning_decoder=planning)
    fresh.load_state_dict(torch.load(tmp_path / "model_0030.pth", weights_only=True), strict=True)
    assert all(torch.equal(fresh.state_dict()[name], tensor) for name, tensor in lead_state.items())


def test_lead_forward_is_deterministic_in_eval_and_has_leads_shapes_11():
    torch.manual_seed(0)
    model = build_model(ModelConfig(image_pretrained="none"), use_planning_decoder=True).eval()
    batch = random_batch(1, seed=2)
    with torch.no_grad():
        first = model(**model_inputs(batch))
        second = model(**model_inputs(batch))
    shapes = {name: tuple(t.shape) for name, t in first.items()}
    assert shapes["semantic"] == (1, 10, 384, 1152) and shapes["depth_m"] == (1, 384, 1152)
    assert shapes["bev_semantic"] == (1, 13, 320, 384) and shapes["center_net_heatmap"] == (1, 8, 80, 96)
    assert shapes["radar_detections"] == (1, 20, 4) and shapes["radar_features"] == (1, 20, 256)
    assert (
        shapes["waypoints"] == (1, 8, 2)
        and shapes["route"] == (1, 10, 2)
        and shapes["target_speed_logits"] == (1, 8)
    )
    assert "center_net_brake" not in first  # LEAD's CenterNet predicts no brake
    assert all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_imagenet_file_initialises_exactly_the_image_encoder_11(suffix, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(image_pretrained="none"), use_planning_decoder=False)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    weights = _timm_resnet34_file(tmp_path / f"resnet34{suffix}", seed=5)
    loaded, message = load_image_pretrained(model, str(tmp_path / f"resnet34{suffix}"))
    assert loaded and str(tmp_path) in message
    prefix = "backbone.image_encoder."
    for name, tensor in model.state_dict().items():
        if name.startswith(prefix):
            assert torch.equal(tensor, weights[name[len(prefix) :]]), name
        else:
            assert torch.equal(tensor, before[name]), name  # LiDAR encoder, GPTs and heads untouched


def test_bad_pretrained_file_names_the_file_and_offline_default_says_what_to_set_11(tmp_path):
    model = build_model(ModelConfig(image_pretrained="none"), use_planning_decoder=False)
    bad = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(LeadFormatError, match="resnet18.pth: not a ResNet34"):
        load_image_pretrained(model, str(bad))
    with pytest.raises(LeadFormatError, match="no such weight file"):
        load_image_pretrained(model, str(tmp_path / "missing.safetensors"))
    message = offline_message("neither timm nor huggingface_hub is installed")
    assert "model.image_pretrained=" in message and "RANDOM" in message and "model.safetensors" in message


def test_lead_fixed_geometry_is_refused_and_lead_keys_map_onto_the_model_11(tmp_path):
    with pytest.raises(ValueError, match=r"model.widths is fixed"):
        ModelConfig(preset="lead", widths=(8, 16, 32, 64))
    cfg = resolve_config(pretrain_config(), [f"logdir={tmp_path}", "use_depth=false", "n_layer=1"])
    assert cfg.model.use_depth is False and cfg.model.gpt_layers == 1 and cfg.model.preset == "lead"
    with pytest.raises(ConfigError, match="use_color_augmentation"):
        resolve_config(pretrain_config(), [f"logdir={tmp_path}", "use_color_augmentation=true"])


def test_disabled_heads_are_not_built_and_their_losses_are_absent_11():
    cfg = ModelConfig(image_pretrained="none", use_depth=False, detect_boxes=False)
    model = build_model(cfg, use_planning_decoder=False)
    names = set(model.state_dict())
    assert not any(n.startswith(("depth_decoder.", "center_net_decoder.")) for n in names)
    assert any(n.startswith("semantic_decoder.") for n in names)
    assert set(model_losses(cfg, use_planning_decoder=False)) == {
        "loss_semantic",
        "loss_bev_semantic",
        "radar_loss",
    }
    compact = ModelConfig(preset="compact", use_semantic=False, use_bev_semantic=False, dropout=0.0)
    small = build_model(compact, use_planning_decoder=False)
    batch = random_batch(2, seed=1)
    outputs = small(**model_inputs(batch))
    assert "semantic" not in outputs and "bev_semantic" not in outputs and "depth_m" in outputs
    targets = centernet_targets(batch.boxes, batch.num_boxes)
    losses = compute_losses(outputs, batch, targets)
    assert set(losses) == set(model_losses(compact, use_planning_decoder=False))
    assert bev_image(batch, outputs, targets.heatmap).shape == (160, 960, 3)  # missing heads: black panels
    assert camera_image(batch, outputs).shape == (288, 576, 3)


def test_per_sample_centernet_loss_is_leads_mean_of_per_sample_ratios_11():
    batch = random_batch(2, seed=4, max_boxes=6)
    batch.num_boxes = torch.tensor([1, 6])
    targets = centernet_targets(batch.boxes, batch.num_boxes)
    g = torch.Generator().manual_seed(0)
    outputs = {
        "center_net_heatmap": torch.randn(2, 8, 80, 96, generator=g),
        "center_net_wh": torch.randn(2, 2, 80, 96, generator=g),
        "center_net_offset": torch.randn(2, 2, 80, 96, generator=g),
        "center_net_yaw_class": torch.randn(2, 12, 80, 96, generator=g),
        "center_net_yaw_res": torch.randn(2, 1, 80, 96, generator=g),
        "center_net_velocity": torch.randn(2, 1, 80, 96, generator=g),
    }
    lead = compute_losses(outputs, batch, targets, per_sample=True)
    pooled = compute_losses(outputs, batch, targets)
    wh = (outputs["center_net_wh"] - targets.wh).abs() * targets.centre_mask[:, None]
    avg = targets.heatmap.eq(1).flatten(1).sum(1).float().clamp(min=1) + torch.finfo(torch.float32).eps
    expected = (wh.flatten(1).sum(1) / (2 * avg)).mean()
    assert torch.allclose(lead["loss_center_net_wh"], expected)
    assert not torch.allclose(lead["loss_center_net_wh"], pooled["loss_center_net_wh"])  # 1 vs 6 boxes
    # the two halves on two "ranks" average to the one-process value (equal per-rank batches)
    halves = [
        compute_losses(
            {k: v[i : i + 1] for k, v in outputs.items()},
            batch,
            centernet_targets(batch.boxes[i : i + 1], batch.num_boxes[i : i + 1]),
            per_sample=True,
            world_size=2,
            reduce_sum=lambda t: t * 2,
        )["loss_center_net_wh"]
        for i in range(2)
    ]
    assert torch.allclose((halves[0] + halves[1]) / 2, lead["loss_center_net_wh"])


def test_lead_runs_write_checkpoints_and_config_a_lead_agent_reads_11(tmp_path):
    weights_file = tmp_path / "resnet34.safetensors"
    weights = _timm_resnet34_file(weights_file, seed=3)
    common = [
        "batch_size=1",
        "max_steps=1",
        "epochs=1",
        "progress=false",
        "num_workers=0",
        "visualize_training=false",
    ]
    pre = resolve_config(
        pretrain_config(), [f"logdir={tmp_path / 'pre'}", f"model.image_pretrained={weights_file}", *common]
    )
    trainer = Trainer(pre, loader=FixedBatchLoader([random_batch(1, seed=0)], steps_per_epoch=1))
    assert torch.equal(trainer.model.backbone.image_encoder.conv1.weight, weights["conv1.weight"])
    trainer.fit()
    state = torch.load(tmp_path / "pre" / "model_0000.pth", weights_only=True)
    assert [[n, list(t.shape), str(t.dtype)] for n, t in state.items()] == LEAD_LAYOUT["pretrain"]
    config = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert config["transfuser_token_dim"] == 256 and config["use_planning_decoder"] is False
    assert config["image_architecture"] == "resnet34" and config["model"]["preset"] == "lead"
    # post-train from a checkpoint LEAD's own trainer wrote (no config.json beside it)
    lead_dir = tmp_path / "lead_release"
    lead_dir.mkdir()
    lead_state = _lead_checkpoint(LEAD_LAYOUT["pretrain"], seed=7)
    torch.save(lead_state, lead_dir / "model_0030.pth")
    post = resolve_config(
        posttrain_config(lead_dir / "model_0030.pth"), [f"logdir={tmp_path / 'post'}", *common]
    )
    trainer = Trainer(post, loader=FixedBatchLoader([random_batch(1, seed=1)], steps_per_epoch=1))
    own = trainer.model.state_dict()
    assert all(torch.equal(own[name], tensor) for name, tensor in lead_state.items())
    assert [[n, list(t.shape), str(t.dtype)] for n, t in own.items()] == LEAD_LAYOUT["posttrain"]
    assert set(trainer.loss_weights) == set(model_losses(post.model, use_planning_decoder=True))


def test_freeze_backbone_keeps_it_fixed_and_sync_batchnorm_needs_cuda_11(tmp_path):
    from train_helpers import TINY

    common = ["epochs=1", "batch_size=2", *TINY, "visualize_training=false"]
    with pytest.raises(ConfigError, match="sync_batchnorm=true needs CUDA"):
        Trainer(
            resolve_config(pretrain_config(), [f"logdir={tmp_path / 's'}", "sync_batchnorm=true", *common])
        )
    cfg = resolve_config(pretrain_config(), [f"logdir={tmp_path / 'f'}", "freeze_backbone=true", *common])
    trainer = Trainer(cfg, loader=FixedBatchLoader([random_batch(2, seed=0)], steps_per_epoch=1))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in before if n.startswith("backbone."))
    assert any(not torch.equal(after[n], before[n]) for n in before if not n.startswith("backbone."))


def test_cli_trains_the_default_lead_model_on_real_shards_11(sharded_root, tmp_path):
    from typer.testing import CliRunner

    from lead_stream.cli.main import app

    run = tmp_path / "pre"
    args = [f"logdir={run}", f"carla_root={sharded_root}", "batch_size=1", "epoch_size=1", "max_steps=1"]
    args += ["num_workers=0", "progress=false", "visualize_training=false"]
    result = CliRunner().invoke(app, ["train", "pretrain", *args])
    assert result.exit_code == 0, result.output
    assert "model.image_pretrained=" in result.output  # offline here: the message says which file and key
    state = torch.load(run / "model_0000.pth", weights_only=True)
    assert [[n, list(t.shape), str(t.dtype)] for n, t in state.items()] == LEAD_LAYOUT["pretrain"]


def test_posttrain_from_a_lead_run_inherits_its_model_keys_11(tmp_path):
    lead_run = tmp_path / "lead_pretrain"
    lead_run.mkdir()
    lead_config = {"transfuser_token_dim": 64, "n_layer": 2, "use_depth": True, "batch_size": 8, "epochs": 3}
    lead_config |= {"compile": True, "radar_num_layers": 4, "image_architecture": "resnet34"}
    (lead_run / "config.json").write_text(json.dumps(lead_config))
    cfg = resolve_config(posttrain_config(lead_run / "model_0030.pth"), [f"logdir={tmp_path / 'post'}"])
    assert cfg.model.token_dim == 64 and cfg.model.preset == "lead"  # LEAD HEAD's default width is kept
    assert cfg.batch_size == 8 and cfg.epochs == 3 and cfg.compile is False and cfg.use_planning_decoder


def test_token_dim_64_of_lead_head_shrinks_only_the_planner_11():
    state = build_model(
        ModelConfig(token_dim=64, image_pretrained="none"), use_planning_decoder=True
    ).state_dict()
    assert state["radar_detector.q"].shape == (1, 20, 256)  # LEAD's radar_token_dim stays 256
    assert state["planning_decoder.query"].shape == (1, 19, 64)
    assert state["planning_decoder.planning_context_encoder.radar_encoder.weight"].shape == (64, 256)
    with pytest.raises(ValueError, match="radar_token_dim exists in preset lead only"):
        ModelConfig(preset="compact", radar_token_dim=128)
