"""Open-loop metrics (issue 14) on hand-computed cases: perfect predictions, known offsets, empty classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lead_stream.core.constants import NUM_BEV_SEMANTIC_CLASSES, NUM_SEMANTIC_CLASSES, BoxClass
from lead_stream.evaluate import Labels, OpenLoopMetrics, Predictions, flat_scalars
from lead_stream.evaluate.adapter import target_speed_class
from lead_stream.evaluate.detection import decode_box_centres, nuscenes_ap


def _labels(B: int = 2, **overrides: torch.Tensor) -> Labels:
    base = dict(
        waypoints=torch.arange(B * 16, dtype=torch.float32).reshape(B, 8, 2),
        planning_valid=torch.ones(B, dtype=torch.bool),
        route=torch.zeros(B, 10, 2),
        target_speed_class=torch.zeros(B, dtype=torch.long),
        bev_semantic=torch.zeros(B, 4, 4, dtype=torch.long),
        semantic=torch.zeros(B, 4, 4, dtype=torch.long),
        depth_m=torch.ones(B, 2, 2),
        boxes=torch.zeros(B, 0, 3),
        box_valid=torch.zeros(B, 0, dtype=torch.bool),
        radar=torch.zeros(B, 0, 2),
        radar_valid=torch.zeros(B, 0, dtype=torch.bool),
    )
    base.update(overrides)
    return Labels(**base)


def _compute(pred: Predictions, label: Labels) -> dict:
    metrics = OpenLoopMetrics()
    metrics.update(pred, label)
    return metrics.compute()


def test_waypoint_ade_fde_per_step_known_offset_skips_invalid_samples_14():
    label = _labels(3, planning_valid=torch.tensor([True, True, False]))
    offset = torch.tensor([3.0, 4.0])  # 5 m at every step
    pred = label.waypoints + offset
    pred[2] += 100.0  # the invalid sample's error must not count
    pred[1, 7] = label.waypoints[1, 7] + torch.tensor([0.0, 15.0])  # last step of sample 1: 15 m
    out = _compute(Predictions(waypoints=pred), label)["planning"]
    assert out["num_samples"] == 2
    assert out["displacement_by_step_m"] == pytest.approx([5.0] * 7 + [10.0])
    assert out["fde_m"] == pytest.approx(10.0)
    assert out["ade_m"] == pytest.approx((7 * 5 + 10) / 8)
    assert out["ade_by_horizon_m"][0] == pytest.approx(5.0)
    assert out["ade_by_horizon_m"][-1] == pytest.approx(out["ade_m"])
    perfect = _compute(Predictions(waypoints=label.waypoints.clone()), label)["planning"]
    assert perfect["ade_m"] == 0.0 and perfect["fde_m"] == 0.0


def test_route_l1_and_ade_known_offset_14():
    label = _labels(2)
    out = _compute(Predictions(route=label.route + torch.tensor([1.0, -2.0])), label)["planning"]
    assert out["route_l1_m"] == pytest.approx(1.5)
    assert out["route_ade_m"] == pytest.approx(math.sqrt(5.0))


def test_target_speed_class_is_nearest_class_brake_is_zero_14():
    speed = torch.tensor([0.0, 4.1, 9.0, 19.0, 12.0])
    brake = torch.tensor([False, False, False, False, True])
    assert target_speed_class(speed, brake).tolist() == [0, 1, 2, 7, 0]  # 9.0: tie 8 | 10 → lower


def test_target_speed_accuracy_and_confusion_14():
    label = _labels(4, target_speed_class=torch.tensor([0, 1, 1, 7]))
    logits = torch.zeros(4, 8)
    logits[torch.arange(4), torch.tensor([0, 1, 2, 7])] = 5.0  # sample 2 predicted 2 instead of 1
    out = _compute(Predictions(target_speed_logits=logits), label)["target_speed"]
    assert out["accuracy"] == pytest.approx(0.75)
    confusion = np.array(out["confusion"])
    assert confusion.sum() == 4 and confusion[1, 2] == 1 and confusion[1, 1] == 1 and confusion[7, 7] == 1


def _one_hot_scores(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float()


def test_semantic_iou_per_class_miou_skips_empty_classes_and_upsamples_14():
    label = torch.tensor([[[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]])
    pred_low = torch.tensor([[[0, 1], [1, 1]]])  # 2 x 2 → nearest 4 x 4: top-right quarter wrong
    out = _compute(
        Predictions(
            bev_semantic=_one_hot_scores(pred_low, NUM_BEV_SEMANTIC_CLASSES),
            semantic=_one_hot_scores(label, NUM_SEMANTIC_CLASSES),
        ),
        _labels(1, bev_semantic=label, semantic=label),
    )
    # class 0: tp 4, fp 0, fn 4 → 0.5; class 1: tp 8, fp 4, fn 0 → 2/3; classes 2.. are absent → NaN
    assert out["bev_semantic"]["iou"]["UNLABELED"] == pytest.approx(0.5)
    assert out["bev_semantic"]["iou"]["ROAD"] == pytest.approx(2 / 3)
    assert math.isnan(out["bev_semantic"]["iou"]["WALKER"])
    assert out["bev_semantic"]["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["semantic"]["miou"] == pytest.approx(1.0)  # perfect


def test_depth_abs_rel_rmse_delta_ignore_pixels_without_depth_14():
    gt = torch.tensor([[[2.0, 4.0], [0.0, 0.0]]])
    out = _compute(Predictions(depth_m=torch.tensor([[[4.0, 8.0], [7.0, 7.0]]])), _labels(1, depth_m=gt))
    assert out["depth"]["abs_rel"] == pytest.approx(1.0)
    assert out["depth"]["rmse_m"] == pytest.approx(math.sqrt((4 + 16) / 2))
    assert out["depth"]["delta1"] == 0.0
    perfect = _compute(Predictions(depth_m=gt.clone() + (gt == 0) * 3), _labels(1, depth_m=gt))["depth"]
    assert perfect["abs_rel"] == 0.0 and perfect["rmse_m"] == 0.0 and perfect["delta1"] == 1.0


def _boxes(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)


def test_box_ap_perfect_is_one_empty_class_nan_and_out_of_map_14():
    labels = _boxes(
        [[10.0, 2.0, BoxClass.VEHICLE], [20.0, -3.0, BoxClass.VEHICLE], [5.0, 5.0, BoxClass.WALKER]]
    )
    pred = _boxes(
        [[10.0, 2.0, 0.9, BoxClass.VEHICLE], [20.0, -3.0, 0.8, BoxClass.VEHICLE], [5.0, 5.0, 0.7, 1]]
    )
    out = _compute(
        Predictions(boxes=pred),
        _labels(1, boxes=labels, box_valid=torch.ones(1, 3, dtype=torch.bool)),
    )["boxes"]
    assert out["ap"]["VEHICLE"] == pytest.approx(1.0) and out["ap"]["WALKER"] == pytest.approx(1.0)
    assert math.isnan(out["ap"]["BIKER"])
    assert out["map"] == pytest.approx(1.0)
    assert out["num_labels"]["VEHICLE"] == 2


def test_box_ap_by_centre_distance_threshold_known_offset_14():
    labels = _boxes([[10.0, 2.0, BoxClass.VEHICLE]])
    pred = _boxes([[11.5, 2.0, 0.9, BoxClass.VEHICLE]])  # 1.5 m off: FP at 0.5 / 1 m, TP at 2 / 4 m
    out = _compute(
        Predictions(boxes=pred), _labels(1, boxes=labels, box_valid=torch.ones(1, 1, dtype=torch.bool))
    )
    assert out["boxes"]["ap_by_threshold"]["VEHICLE"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert out["boxes"]["map"] == pytest.approx(0.5)


def test_box_ap_half_recall_and_class_must_match_14():
    labels = _boxes([[10.0, 2.0, BoxClass.VEHICLE], [30.0, 0.0, BoxClass.VEHICLE]])
    # one hit; one prediction at the second label but of the wrong class (a FP for WALKER, no VEHICLE hit)
    pred = _boxes([[10.0, 2.0, 0.9, BoxClass.VEHICLE], [30.0, 0.0, 0.8, BoxClass.WALKER]])
    out = _compute(
        Predictions(boxes=pred), _labels(1, boxes=labels, box_valid=torch.ones(1, 2, dtype=torch.bool))
    )
    # recall 0.5 at precision 1: the 40 recall points 0.11..0.50 of the 90 kept have precision 1
    assert out["boxes"]["ap"]["VEHICLE"] == pytest.approx(40 * 0.9 / 90 / 0.9)
    assert math.isnan(out["boxes"]["ap"]["WALKER"])  # no WALKER label: undefined, not 0


def test_nuscenes_ap_lower_scored_false_positive_after_all_hits_is_free_14():
    tp, fp = np.zeros(1000), np.zeros(1000)
    tp[900], fp[100] = 2, 1  # both labels found above the false positive
    assert nuscenes_ap(tp, fp, 2) == pytest.approx(1.0)
    tp2, fp2 = np.zeros(1000), np.zeros(1000)
    fp2[900], tp2[100] = 1, 1  # the false positive outranks the only hit: (recall 0, 0), then (1, 0.5)
    # precision 0.5·r between them; Σ over r = 0.21..1.00 of (0.5·r - 0.1) = 16.2, / 90 points / 0.9
    assert nuscenes_ap(tp2, fp2, 1) == pytest.approx(16.2 / 90 / 0.9)


def test_radar_ap_is_class_agnostic_14():
    label = _labels(
        1, radar=torch.tensor([[[10.0, 0.0], [20.0, 5.0]]]), radar_valid=torch.tensor([[True, False]])
    )
    out = _compute(Predictions(radar=torch.tensor([[[10.2, 0.0, 0.9], [20.0, 5.0, 0.8]]])), label)["radar"]
    # one valid label hit within 0.5 m; the second prediction hits only an invalid label → FP below it
    assert out["ap_by_threshold"] == pytest.approx({"0.5": 1.0, "1": 1.0, "2": 1.0, "4": 1.0})
    assert out["num_labels"] == 1


def test_decode_box_centres_local_maxima_offsets_and_metres_14():
    heat = torch.zeros(1, 8, 80, 96)
    heat[0, BoxClass.WALKER, 40, 32] = 0.9  # row = y cell, col = x cell
    heat[0, BoxClass.WALKER, 40, 33] = 0.5  # a neighbour of the peak: suppressed
    heat[0, BoxClass.VEHICLE, 10, 80] = 0.7
    offset = torch.zeros(1, 2, 80, 96)
    offset[0, :, 40, 32] = torch.tensor([0.25, 0.5])
    boxes = decode_box_centres(heat, offset, area_m=(-32.0, 64.0, -40.0, 40.0), top_k=3, kernel=3)
    assert boxes.shape == (1, 3, 4)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.25, 0.5, 0.9, float(BoxClass.WALKER)]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([48.0, -30.0, 0.7, float(BoxClass.VEHICLE)]))
    assert float(boxes[0, 2, 2]) == 0.0  # the suppressed neighbour is not a centre


def test_merged_sums_equal_one_pass_and_scalars_are_flat_14():
    torch.manual_seed(0)
    B = 6
    label = _labels(
        B,
        bev_semantic=torch.randint(0, 5, (B, 4, 4)),
        boxes=torch.rand(B, 5, 3) * torch.tensor([20.0, 20.0, 3.0]),
        box_valid=torch.rand(B, 5) > 0.3,
        target_speed_class=torch.randint(0, 8, (B,)),
    )
    pred = Predictions(
        waypoints=label.waypoints + torch.randn(B, 8, 2),
        target_speed_logits=torch.randn(B, 8),
        bev_semantic=torch.randn(B, NUM_BEV_SEMANTIC_CLASSES, 4, 4),
        boxes=torch.cat([torch.rand(B, 7, 2) * 20, torch.rand(B, 7, 1), torch.randint(0, 3, (B, 7, 1))], -1),
    )
    whole = _compute(pred, label)
    halves = [OpenLoopMetrics(), OpenLoopMetrics()]
    for half, mask in zip(halves, (torch.arange(B) < 2, torch.arange(B) >= 2)):
        half.update(pred.rows(mask), label.rows(mask))
    other = halves[1].state()
    halves[0].reduce(lambda flat: flat + torch.cat([p.reshape(-1) for p in other]))
    merged = halves[0].compute()
    assert merged["boxes"]["ap"] == pytest.approx(whole["boxes"]["ap"], nan_ok=True)
    assert merged["planning"]["ade_m"] == pytest.approx(whole["planning"]["ade_m"])
    assert merged["target_speed"]["confusion"] == whole["target_speed"]["confusion"]
    scalars = flat_scalars(whole)
    assert scalars["planning/ade_m"] == whole["planning"]["ade_m"]
    assert "bev_semantic/iou/ROAD" in scalars
    assert all(math.isfinite(v) for v in scalars.values())
