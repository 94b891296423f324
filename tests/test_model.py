"""TFv6 model, CenterNet targets and losses: shapes, LEAD's parameter budget, DDP-exact loss normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lead_stream.core.constants import BoxField
from lead_stream.model import (
    LossWeights,
    ModelConfig,
    TFv6,
    centernet_targets,
    compute_losses,
    count_parameters,
    model_inputs,
)
from lead_stream.model.losses import active_losses, two_hot_target_speed
from lead_stream.model.random_batch import random_batch, slice_batch
from lead_stream.model.targets import class_to_yaw, yaw_to_class

TINY = ModelConfig(
    preset="compact",
    widths=(8, 16, 32, 32),
    image_size=(48, 144),
    bev_size=(40, 48),
    bev_channels=16,
    decoder_channels=(16, 8, 8),
    token_dim=32,
    dropout=0.0,
)


@pytest.mark.parametrize(
    ("planning", "lead_millions"), [(False, 59.13), (True, 68.88)], ids=["pretrain", "posttrain"]
)
def test_full_preset_is_within_5_percent_of_lead_parameter_count(planning, lead_millions):
    model = TFv6(ModelConfig(preset="full"), use_planning_decoder=planning)
    assert abs(count_parameters(model) / 1e6 - lead_millions) / lead_millions < 0.05
    assert (model.planning_decoder is not None) == planning


def test_compact_forward_shapes_and_fp32_norms():
    model = TFv6(ModelConfig(preset="compact"), use_planning_decoder=True)
    batch = random_batch(2)
    assert not any(type(m) in (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm) for m in model.modules())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**model_inputs(batch))
    assert out["semantic"].shape == (2, 10, 96, 288) and out["depth_m"].shape == (2, 96, 288)
    assert out["bev_semantic"].shape == (2, 13, 80, 96) and out["center_net_heatmap"].shape == (2, 8, 80, 96)
    assert out["center_net_yaw_class"].shape == (2, 12, 80, 96) and out["radar_detections"].shape == (
        2,
        20,
        4,
    )
    assert out["waypoints"].shape == (2, 8, 2) and out["route"].shape == (2, 10, 2)
    assert out["target_speed_logits"].shape == (2, 8)
    assert count_parameters(model) < 2_000_000


def test_centernet_targets_have_no_phantom_peak_from_padding():
    boxes = torch.zeros(2, 90, 9)
    boxes[1, 1] = torch.tensor([100.0, 60.0, 8.0, 4.0, 0.1, 3.0, 1.0, 1.0, 0.0])  # garbage beyond num_boxes=1
    targets = centernet_targets(boxes, torch.tensor([0, 0]))
    assert targets.heatmap.max() == 0 and targets.num_centres == 0 and not targets.centre_mask.any()


def test_centernet_targets_put_one_peak_and_regressions_at_the_box_centre():
    boxes = torch.zeros(1, 90, 9)
    yaw = 0.7
    boxes[
        0,
        0,
        [
            BoxField.X,
            BoxField.Y,
            BoxField.W,
            BoxField.H,
            BoxField.YAW,
            BoxField.VELOCITY,
            BoxField.BRAKE,
            BoxField.CLASS,
        ],
    ] = torch.tensor([130.0, 161.0, 8.0, 4.0, yaw, 3.0, 1.0, 1.0])
    t = centernet_targets(boxes, torch.tensor([1]))
    row, col = 161 // 4, 130 // 4
    assert t.heatmap[0, 1, row, col] == 1 and t.heatmap[0, 0].max() == 0 and int(t.num_centres) == 1
    assert torch.equal(t.heatmap[0, 1].eq(1).nonzero(), torch.tensor([[row, col]]))
    torch.testing.assert_close(t.wh[0, :, row, col], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(t.offset[0, :, row, col], torch.tensor([0.5, 0.25]))
    assert t.brake[0, row, col] == 1 and t.velocity[0, 0, row, col] == 3.0
    recovered = class_to_yaw(t.yaw_class[0, row, col], t.yaw_res[0, 0, row, col])
    assert math.isclose(float(recovered), yaw, abs_tol=1e-5)
    assert t.heatmap[0, 1, row, col + 2] > 0  # the Gaussian has radius >= 2 (LEAD's minimum)


def test_yaw_bins_round_trip():
    yaws = torch.linspace(-math.pi + 1e-3, math.pi - 1e-3, 101)
    cls, res = yaw_to_class(yaws)
    assert cls.min() >= 0 and cls.max() <= 11 and res.abs().max() <= math.pi / 12 + 1e-5
    torch.testing.assert_close(class_to_yaw(cls, res), yaws, atol=1e-5, rtol=0)


def test_target_speed_two_hot_and_brake():
    target = two_hot_target_speed(torch.tensor([6.0, 25.0, 10.0]), torch.tensor([False, False, True]))
    torch.testing.assert_close(target[0], torch.tensor([0, 0.5, 0.5, 0, 0, 0, 0, 0]))
    assert target[1, -1] == 1 and target[2, 0] == 1
    torch.testing.assert_close(target.sum(-1), torch.ones(3))


def test_loss_weights_are_normalised_like_lead():
    pre = LossWeights().normalized(active_losses(use_radar_detection=True, use_planning_decoder=False))
    post = LossWeights().normalized(active_losses(use_radar_detection=True, use_planning_decoder=True))
    assert math.isclose(sum(pre.values()), 1.0) and math.isclose(pre["loss_semantic"], 1 / 9.00001)
    assert math.isclose(post["loss_spatio_temporal_waypoints"], 1 / 12.00001)


def test_split_batch_losses_average_to_the_full_batch_loss():
    """What DDP relies on: per-rank losses with globally reduced normalisers average to the global loss."""
    torch.manual_seed(0)
    model = TFv6(TINY, use_planning_decoder=True).eval()
    batch = random_batch(4, seed=1)
    batch.planning_valid[1] = False
    halves = [slice_batch(batch, 0, 2), slice_batch(batch, 2, 4)]
    with torch.no_grad():
        full = compute_losses(
            model(**model_inputs(batch)), batch, centernet_targets(batch.boxes, batch.num_boxes)
        )
        outs = [model(**model_inputs(h)) for h in halves]
        # counts summed over both "ranks", as all_reduce would
        per_half_counts = []
        for out, half in zip(outs, halves):
            captured = {}

            def capture(counts, captured=captured):
                captured["counts"] = counts.clone()
                return counts

            compute_losses(out, half, centernet_targets(half.boxes, half.num_boxes), reduce_sum=capture)
            per_half_counts.append(captured["counts"])
        global_counts = per_half_counts[0] + per_half_counts[1]
        parts = [
            compute_losses(
                out,
                half,
                centernet_targets(half.boxes, half.num_boxes),
                reduce_sum=lambda _c: global_counts.clone(),
                world_size=2,
            )
            for out, half in zip(outs, halves)
        ]
    for name, value in full.items():
        torch.testing.assert_close((parts[0][name] + parts[1][name]) / 2, value, rtol=1e-4, atol=1e-6)


def _box(x: float, y: float, w: float, velocity: float) -> torch.Tensor:
    row = torch.zeros(9)
    row[BoxField.X], row[BoxField.Y], row[BoxField.W], row[BoxField.H] = x, y, w, 4.0
    row[BoxField.VELOCITY], row[BoxField.CLASS] = velocity, 0.0
    return row


def test_centernet_targets_follow_leads_cell_rules_for_shared_and_edge_centres():
    """LEAD loops over boxes writing at int(centre): the last box of a shared cell wins, and a
    centre less than one cell left of the grid (x in (-4, 0) px) truncates into column 0."""
    boxes = torch.zeros(1, 90, 9)
    boxes[0, 0] = _box(130.0, 161.0, 8.0, 3.0)  # cell (40, 32)
    boxes[0, 1] = _box(131.0, 162.0, 12.0, 5.0)  # same cell, later in the array
    boxes[0, 2] = _box(-2.0, 21.0, 8.0, 7.0)  # x = -0.5 cells -> column 0, row 5
    t = centernet_targets(boxes, torch.tensor([3]))
    assert int(t.num_centres) == 2
    assert t.velocity[0, 0, 40, 32] == 5.0 and t.wh[0, 0, 40, 32] == 3.0  # the second box's targets
    assert t.centre_mask[0, 5, 0] and t.velocity[0, 0, 5, 0] == 7.0
    assert torch.isclose(t.offset[0, 0, 5, 0], torch.tensor(-0.5))  # LEAD's ct - int(ct)
