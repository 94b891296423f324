"""Per-box future waypoints follow LEAD's `bbox_json2array`: 5-step spacing, 10 m jump cut, extrapolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lead_stream.cache import labels as L
from lead_stream.core import geometry


def _car(future: np.ndarray | None, *, yaw: float = 0.0, speed: float = 4.0, future_yaws=None) -> dict:
    box = {"class": "car", "position": [5.0, 2.0, 0.0], "yaw": yaw, "speed": speed}
    if future is not None:
        box["future_positions"] = future.astype(np.float16)
        box["future_yaws"] = (np.zeros(len(future)) if future_yaws is None else future_yaws).astype(
            np.float16
        )
    return box


def _straight(steps: int, step_m: float = 0.2) -> np.ndarray:
    """A track along +x from (5, 2): index k = k 20 Hz steps ahead."""
    return np.stack([5.0 + step_m * np.arange(steps), np.full(steps, 2.0)], axis=1)


def test_a_full_track_gives_every_fifth_future_position():
    future = _straight(41)
    waypoints, counts = L.box_waypoints([_car(future)], [0], translation_m=0.0, rotation_deg=0.0)
    assert waypoints.shape == (1, 8, 2) and waypoints.dtype == np.float32 and counts.tolist() == [8]
    np.testing.assert_array_equal(waypoints[0], future.astype(np.float16)[5:41:5].astype(np.float32))


def test_a_short_track_is_extrapolated_at_constant_speed_along_the_last_yaw():
    future = _straight(21)  # waypoints 1..4 exist (indices 5..20)
    yaws = np.full(21, math.pi / 2)
    waypoints, counts = L.box_waypoints(
        [_car(future, speed=4.0, future_yaws=yaws)], [0], translation_m=0.0, rotation_deg=0.0
    )
    assert counts.tolist() == [4]
    step = 4.0 * 0.25 * np.array([math.cos(np.float16(math.pi / 2)), math.sin(np.float16(math.pi / 2))])
    expected = future.astype(np.float16)[20].astype(np.float64) + step * np.arange(1, 5)[:, None]
    np.testing.assert_allclose(waypoints[0, 4:], expected, atol=1e-3)


def test_a_teleported_actor_is_cut_at_the_jump():
    future = _straight(41)
    future[15:] += 50.0  # vanished: teleported away after step 14
    waypoints, counts = L.box_waypoints([_car(future, speed=0.0)], [0], translation_m=0.0, rotation_deg=0.0)
    assert counts.tolist() == [2]  # indices 5 and 10 only
    assert (np.abs(waypoints[0, 2:] - waypoints[0, 1]) < 1e-6).all()  # speed 0: extrapolation stays put


def test_without_futures_the_raw_position_is_repeated_unperturbated_as_lead_does():
    waypoints, counts = L.box_waypoints([_car(None)], [0], translation_m=0.7, rotation_deg=9.0)
    assert counts.tolist() == [0]
    np.testing.assert_array_equal(waypoints[0], np.tile(np.float32([5.0, 2.0]), (8, 1)))


@pytest.mark.parametrize("translation_m, rotation_deg", [(0.0, 0.0), (0.8, -12.0)])
def test_waypoints_move_with_the_variant_like_the_box_centres(translation_m, rotation_deg):
    future = _straight(41)
    waypoints, _ = L.box_waypoints(
        [_car(future)], [0], translation_m=translation_m, rotation_deg=rotation_deg
    )
    raw = future.astype(np.float16)[5:41:5].astype(np.float64)
    expected = geometry.perturb_point_rows(raw, translation_m, rotation_deg).astype(np.float32)
    np.testing.assert_array_equal(waypoints[0], expected)


def test_waypoints_follow_the_kept_boxes_in_order():
    boxes = [_car(_straight(41)), _car(None), _car(_straight(11))]
    waypoints, counts = L.box_waypoints(boxes, [2, 0], translation_m=0.0, rotation_deg=0.0)
    assert counts.tolist() == [2, 8]
    assert L.box_waypoints(boxes, [], translation_m=0.0, rotation_deg=0.0)[0].shape == (0, 8, 2)
