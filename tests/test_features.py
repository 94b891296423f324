"""Frame → sample members on hand-made arrays: LEAD label semantics, perturbation, encoding round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lead_stream.cache import features as F
from lead_stream.cache import frame as FR
from lead_stream.cache import labels as L
from lead_stream.cache import targets as T
from lead_stream.cache.labels import raster, rules
from lead_stream.core import codecs
from lead_stream.core import geometry as G
from lead_stream.core.constants import BoxClass, BoxField
from lead_stream.core.errors import LeadFormatError

CONTRACT_MEMBERS = ("arrays.lz4", "rgb.jpg", "rgb_pert.jpg")
CONTRACT_ARRAYS = {  # name → (dtype, shape; None = rows vary)
    "lidar_bev": (np.uint8, (320, 384)),
    "semantic": (np.uint8, (384, 1152)),
    "depth": (np.uint8, (96, 288)),
    "bev_semantic": (np.uint8, (320, 384)),
    "boxes": (np.float32, (None, 9)),
    "box_waypoints": (np.float32, (None, 8, 2)),
    "box_num_waypoints": (np.uint8, (None,)),
    "radar": (np.float16, (None, 5)),
    "radar_detections": (np.float32, (20, 4)),
    "target_point": (np.float32, (2,)),
    "target_point_previous": (np.float32, (2,)),
    "target_point_next": (np.float32, (2,)),
    "future_waypoints": (np.float32, (8, 2)),
    "future_yaws_rad": (np.float32, (8,)),
    "route": (np.float32, (10, 2)),
    "ego": (np.float32, (6,)),
}


def assert_groups_equal(decoded: dict, expected: dict) -> None:
    """Bit-exact equality of two {group: {array name: array}} dicts (dtype, shape, values); a dict of
    scalars (the "targets" group) must be equal."""
    assert list(decoded) == list(expected)
    for group, arrays in expected.items():
        if group == F.TARGETS_GROUP:
            assert decoded[group] == arrays
            continue
        assert list(decoded[group]) == list(arrays), group
        for name, array in arrays.items():
            got = decoded[group][name]
            assert got.dtype == array.dtype and got.shape == array.shape, (group, name)
            np.testing.assert_array_equal(got, array, err_msg=f"{group}/{name}")


def _car(x: float, y: float, **extra) -> dict:
    box = {
        "class": "car",
        "extent": [2.4, 1.0, 0.8],
        "position": [x, y, 0.0],
        "yaw": 0.2,
        "speed": 5.0,
        "brake": 0.0,
        "id": int(1000 * x + y),
        "num_points": 40,
        "num_radar_points": 2,
        "visible_pixels": 80,
        "transfuser_semantics_id": 1,
        "role_name": "background",
        "type_id": "vehicle.tesla.model3",
        "lane_type_str": "Driving",
    }
    box.update(extra)
    return box


def _meta(**extra) -> dict:
    meta = {
        "speed": 4.0,
        "target_speed": 6.0,
        "brake": False,
        "throttle": 0.4,
        "steer": 0.01,
        "theta": 0.5,
        "pos_global": [100.0, 50.0, 0.0],
        "perturbation_translation": 0.6,
        "perturbation_rotation": 7.0,
        "next_target_points_3.25": [
            [100.0, 50.0, 0.0],
            [100.0, 50.0, 0.0],
            [120.0, 60.0, 0.0],
            [150.0, 60.0, 0.0],
        ],
        "next_commands_3.25": [4, 4, 1, 3],
        "previous_target_points_3.25": [],
        "future_positions": np.stack([np.arange(60) * 0.2, np.zeros(60), np.zeros(60)], 1).astype(np.float32),
        "future_yaws": np.linspace(0, 0.3, 60).astype(np.float32),
        "route": np.stack([np.arange(2.5, 40.0), np.zeros(38)], 1).astype(np.float32),
        "current_active_scenario_type": None,
        "previous_active_scenario_type": None,
        "scenario_obstacles_ids": [],
    }
    meta.update(extra)
    return meta


def _sensors(rng: np.random.Generator) -> FR.SensorInputs:
    return FR.SensorInputs(
        rgb_jpeg=codecs.encode_jpg(rng.integers(0, 256, (384, 1152, 3), dtype=np.uint8)),  # must decode (#16)
        semantics=rng.integers(0, 10, (384, 1152), dtype=np.uint8),
        depth_m=(rng.integers(0, 256, (96, 288)) / 255 * 50).astype(np.float32),
        hdmap=rng.choice(np.array([0, 1, 3, 4], dtype=np.uint8), (256, 256)),
        radar={f"radar{i}": rng.normal(0, 30, (90, 4)).astype(np.float16) for i in range(1, 5)},
    )


@pytest.fixture()
def frame_inputs() -> FR.FrameInputs:
    rng = np.random.default_rng(0)
    boxes = [
        {
            "class": "ego_car",
            "extent": [2.4, 1.0, 0.8],
            "position": [0, 0, 0],
            "yaw": 0.0,
            "speed": 4.0,
            "brake": 0.0,
            "id": 0,
            "num_points": -1,
            "visible_pixels": -1,
            "transfuser_semantics_id": 0,
        },
        _car(10.0, 3.0),
        _car(-20.0, -6.0, num_radar_points=0),
        {
            "class": "walker",
            "extent": [0.3, 0.3, 0.9],
            "position": [6.0, -4.0, 0.0],
            "yaw": 1.0,
            "speed": 1.2,
            "id": 7,
            "num_points": 30,
            "num_radar_points": 1,
            "visible_pixels": 50,
            "transfuser_semantics_id": 4,
        },
    ]
    return FR.FrameInputs(
        route_id="Accident/Town01_Rep0_r",
        frame_idx=5,
        meta=_meta(),
        boxes=boxes,
        lidar=rng.normal(0, 25, (20000, 4)).astype(np.float32),
        normal=_sensors(rng),
        perturbated=_sensors(rng),
    )


def test_member_names_are_exactly_the_contract_list():
    assert sorted(F.MEMBER_NAMES) == sorted(CONTRACT_MEMBERS)
    assert list(F.MEMBER_NAMES) == sorted(F.MEMBER_NAMES)


def test_every_member_decodes_to_what_preprocessing_produced(frame_inputs):
    sample = F.build_sample(frame_inputs)
    frame = FR.Frame(frame_inputs)
    assert set(sample) == set(F.MEMBER_NAMES)
    for member in F.MEMBERS:
        expected = member.compute(frame)
        if member.kind == "jpg":
            assert sample[member.name] == expected == frame.sensors(member.perturbated).rgb_jpeg
        elif member.kind == "json":
            assert F.decode_member(member.name, sample[member.name]) == expected
        else:
            assert_groups_equal(F.decode_member(member.name, sample[member.name]), expected)


def test_member_shapes_and_dtypes_follow_the_contract(frame_inputs):
    sample = {
        name: F.decode_member(name, payload)
        for name, payload in F.build_sample(frame_inputs).items()
        if not name.endswith(".jpg")
    }
    assert (
        list(sample["arrays.lz4"]) == [*F.VARIANTS, F.TARGETS_GROUP] == ["normal", "perturbated", "targets"]
    )
    for variant in F.VARIANTS:
        arrays = sample["arrays.lz4"][variant]
        assert list(arrays) == list(CONTRACT_ARRAYS) == list(F.ARRAY_NAMES)
        for name, (dtype, shape) in CONTRACT_ARRAYS.items():
            array = arrays[name]
            assert array.dtype == dtype and array.ndim == len(shape), (variant, name)
            assert all(want is None or got == want for got, want in zip(array.shape, shape)), (variant, name)
        assert arrays["lidar_bev"].max() <= 5 and arrays["bev_semantic"].max() <= 12
        assert arrays["boxes"].shape == (3, 9) and arrays["box_waypoints"].shape == (3, 8, 2)
        assert arrays["box_num_waypoints"].shape == (3,)
        assert set(arrays["radar"][:, 4].tolist()) <= {0, 1, 2, 3}
    targets = sample["arrays.lz4"][F.TARGETS_GROUP]
    assert "normal" not in targets and "perturbated" not in targets  # per-variant geometry is in the groups
    assert targets["speed_mps"] == 4.0 and targets["command"] == 4 and targets["planning_valid"] is True
    for variant in F.VARIANTS:  # the loader's copy of the scalars it needs
        ego = dict(zip(F.EGO_FIELDS, sample["arrays.lz4"][variant]["ego"].tolist()))
        assert ego == {name: float(targets[name]) for name in F.EGO_FIELDS}
        assert ego["speed_mps"] == 4.0 and ego["target_speed_mps"] == 6.0 and ego["planning_valid"] == 1.0
    normal = T.sample_targets(frame_inputs.meta)["normal"]
    np.testing.assert_array_equal(
        sample["arrays.lz4"]["normal"]["future_waypoints"],
        np.asarray(normal["future_waypoints"], dtype=np.float32),
    )


def test_lz4_members_use_high_compression_but_decode_with_codecs():
    array = np.tile(np.arange(384, dtype=np.uint8) // 40, (320, 1))
    payload = F.encode_member("lidar_bev.lz4", array)
    np.testing.assert_array_equal(codecs.decode("lz4", payload), array)
    assert len(payload) <= len(codecs.encode("lz4", array))


def test_lidar_histogram_matches_lead_histogramdd_reference():
    rng = np.random.default_rng(1)
    points = np.concatenate(
        [
            rng.uniform([-40, -50, -6], [70, 50, 12], (50000, 3)),
            [[64.0, 40.0, 0.0], [-32.0, -40.0, 0.0], [0.0, 0.0, -4.0], [0.0, 0.0, 10.0]],
        ]
    )
    points = points.astype(np.float32)
    keep = (points[:, 2] >= -4) & (points[:, 2] <= 10)
    xbins, ybins = np.linspace(-32, 64, 385), np.linspace(-40, 40, 321)
    hist = np.histogramdd(points[keep, :2], bins=(xbins, ybins))[0]
    reference = np.minimum(hist, 5).T
    got = G.rasterize_lidar(points)
    assert got.dtype == np.uint8 and got.shape == (320, 384)
    np.testing.assert_array_equal(got, reference.astype(np.uint8))


def test_perturbation_maps_points_and_yaws_like_lead():
    t, r = 0.5, 10.0
    p = np.array([[10.0, 2.0, 1.5]])
    rot = np.array(
        [
            [math.cos(math.radians(r)), -math.sin(math.radians(r))],
            [math.sin(math.radians(r)), math.cos(math.radians(r))],
        ]
    )
    expected = rot.T @ (p[0, :2] - np.array([0.0, t]))
    out = G.perturb_points(p, t, r)
    np.testing.assert_allclose(out[0, :2], expected)
    assert out[0, 2] == 1.5
    np.testing.assert_allclose(G.perturb_yaws(np.array([3.1]), r), [G.wrap_angle(3.1 - math.radians(r))])
    assert -math.pi <= G.wrap_angle(4.0) < math.pi


def test_box_labels_filter_classes_and_use_bev_pixels():
    boxes = [
        {
            "class": "ego_car",
            "extent": [2, 1, 1],
            "position": [0, 0, 0],
            "yaw": 0,
            "speed": 0,
            "brake": 0,
            "id": 0,
        },
        _car(10.0, 3.0),
        _car(11.0, 3.0, num_points=0, visible_pixels=0),  # occluded vehicle
        _car(100.0, 0.0),  # outside the BEV
        _car(12.0, -3.0, type_id="vehicle.gazelle.omafiets"),  # biker
        _car(13.0, 5.0, role_name="scenario", type_id="vehicle.ford.ambulance"),  # special
        {
            "class": "traffic_light",
            "extent": [0.5, 0.5, 1],
            "position": [20, 0, 3],
            "yaw": 0,
            "id": 5,
            "state": "Green",
            "affects_ego": True,
        },
        {
            "class": "traffic_light",
            "extent": [0.5, 0.5, 1],
            "position": [20, 1, 3],
            "yaw": 0,
            "id": 6,
            "state": "Red",
            "affects_ego": True,
        },
        {
            "class": "static",
            "extent": [0.3, 0.3, 0.3],
            "position": [8, 2, 0],
            "yaw": 0,
            "speed": 0,
            "id": 8,
            "num_points": 10,
            "visible_pixels": 10,
            "type_id": "static.prop.constructioncone",
            "mesh_path": None,
            "transfuser_semantics_id": 6,
        },
        {
            "class": "static",
            "extent": [1, 1, 1],
            "position": [9, 2, 0],
            "yaw": 0,
            "speed": 0,
            "id": 9,
            "num_points": 10,
            "visible_pixels": 10,
            "type_id": "static.prop.bench",
            "mesh_path": None,
            "transfuser_semantics_id": 0,
        },  # not whitelisted
        {
            "class": "static_prop_car",
            "extent": [2, 1, 1],
            "position": [-5, 6, 0],
            "yaw": 0,
            "id": 10**8,
            "num_points": 10,
            "visible_pixels": 10,
            "transfuser_semantics_id": 1,
        },
    ]
    out = L.box_labels(boxes, _meta(), translation_m=0.0, rotation_deg=0.0)
    classes = out[:, BoxField.CLASS].astype(int).tolist()
    assert classes == [
        BoxClass.VEHICLE,
        BoxClass.BIKER,
        BoxClass.SPECIAL,
        BoxClass.TRAFFIC_LIGHT,
        BoxClass.OBSTACLE,
        BoxClass.PARKING,
    ]
    np.testing.assert_allclose(
        out[0, [BoxField.X, BoxField.Y, BoxField.W, BoxField.H]],
        [(10 + 32) * 4, (3 + 40) * 4, 2.4 * 4, 1.0 * 4],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        out[4, [BoxField.W, BoxField.H]], np.array(rules.CONSTRUCTION_CONE_HALF_EXTENT_M) * 4, rtol=1e-6
    )
    assert out.dtype == np.float32
    assert L.box_labels([], _meta(), translation_m=0.0, rotation_deg=0.0).shape == (0, 9)


def test_box_labels_keep_at_most_90_without_padding():
    boxes = [_car(float(i % 50), float(i // 50) - 20) for i in range(120)]
    assert L.box_labels(boxes, _meta(), translation_m=0.0, rotation_deg=0.0).shape == (90, 9)


def test_scenario_obstacles_are_relabelled():
    stopped = _car(10.0, 3.0, role_name="scenario", speed=0.0, id=42)
    meta = _meta(current_active_scenario_type="Accident", scenario_obstacles_ids=[42])
    out = L.box_labels([stopped], meta, translation_m=0.0, rotation_deg=0.0)
    assert int(out[0, BoxField.CLASS]) == BoxClass.OBSTACLE


def test_perturbated_boxes_are_moved_with_the_rig():
    box = _car(10.0, 3.0)
    out = L.box_labels([box], _meta(), translation_m=0.5, rotation_deg=5.0)
    x, y = G.perturb_points(np.array([[10.0, 3.0]]), 0.5, 5.0)[0]
    np.testing.assert_allclose(out[0, [BoxField.X, BoxField.Y]], [(x + 32) * 4, (y + 40) * 4], rtol=1e-6)
    assert out[0, BoxField.YAW] == pytest.approx(0.2 - math.radians(5.0), abs=1e-6)


def test_hdmap_is_converted_cropped_and_upsampled():
    hdmap = np.zeros((256, 256), dtype=np.uint8)
    hdmap[48, 64] = 1  # road → first 2x2 pixels of the BEV
    hdmap[207, 255] = 4  # broken lane marking → last 2x2 pixels
    hdmap[47, 64] = 1  # outside the crop
    bev = L.hdmap_to_bev(hdmap)
    assert bev.shape == (320, 384)
    assert (bev[:2, :2] == 1).all() and (bev[-2:, -2:] == 2).all() and bev.sum() == 4 * 1 + 4 * 2


def test_bev_semantic_merges_occupancy_over_hdmap():
    hdmap_bev = np.ones((320, 384), dtype=np.uint8)
    occupancy = np.zeros((320, 384), dtype=np.uint8)
    occupancy[10, 10] = L.OccupancyClass.WALKER
    merged = L.merge_bev_semantic(hdmap_bev, occupancy)
    assert merged[10, 10] == L.OccupancyClass.WALKER + 3 and merged[0, 0] == 1


def test_bev_occupancy_draws_a_vehicle_rectangle_with_leads_integer_corners_12():
    occupancy = L.bev_occupancy([_car(10.0, 3.0, yaw=0.0)], _meta(), translation_m=0.0, rotation_deg=0.0)
    rows, cols = np.nonzero(occupancy == L.OccupancyClass.VEHICLE)
    # LEAD: corners (552 ± 9.6, 524 ± 4) on its 1024 grid, truncated to int, boundary rows/columns filled
    assert rows.min() == (3 - 1 + 40) * 4 and rows.max() == (3 + 1 + 40) * 4
    assert cols.min() == 542 - 384 and cols.max() == 561 - 384


def test_radar_points_are_cropped_capped_and_tagged():
    inside = np.tile([[10.0, 1.0, 0.5, -3.0]], (80, 1))
    radar = {
        "radar1": inside,
        "radar2": np.array([[200.0, 0, 0, 0]]),
        "radar3": np.zeros((0, 4)),
        "radar4": np.array([[-32, 40, 0, 1]]),
    }
    radar = {name: points.astype(np.float16) for name, points in radar.items()}
    out = L.radar_points(radar)
    assert out.shape == (76, 5) and out.dtype == np.float16  # LEAD's radar dtype: exact
    assert (out[:75, 4] == 0).all() and out[75, 4] == 3


def test_radar_detections_sort_by_speed_then_class():
    boxes = np.zeros((3, 9), dtype=np.float32)
    boxes[:, BoxField.X] = [(5 + 32) * 4, (6 + 32) * 4, (7 + 32) * 4]
    boxes[:, BoxField.Y] = 40 * 4
    boxes[:, BoxField.VELOCITY] = [1.0, 5.0, 5.0]
    boxes[:, BoxField.CLASS] = [BoxClass.VEHICLE, BoxClass.WALKER, BoxClass.VEHICLE]
    boxes[:, BoxField.NUM_RADAR_POINTS] = [1, 1, 1]
    out = L.radar_detection_labels(boxes)
    np.testing.assert_allclose(out[:3, 0], [7.0, 6.0, 5.0])
    assert out[:3, 3].tolist() == [1, 1, 1] and not out[3:].any()


def test_smooth_route_resamples_a_straight_line_from_2_5m():
    route = np.stack([np.arange(2.5, 30, 2.0), np.zeros(14)], 1)
    np.testing.assert_allclose(T.smooth_route(route)[:, 0], 2.5 + np.arange(10), atol=1e-9)
    short = np.array([[3.0, 0.0], [4.0, 0.0]])  # extrapolated past its end
    np.testing.assert_allclose(T.smooth_route(short)[:, 0], 2.5 + np.arange(10), atol=1e-9)


def test_targets_transform_target_points_and_merge_duplicates():
    meta = _meta()
    targets = T.sample_targets(meta)
    expected = G.world_to_ego(np.array([[120.0, 60.0]]), np.array([100.0, 50.0]), 0.5)[0]
    np.testing.assert_allclose(targets["normal"]["target_point"], expected, atol=1e-6)  # rounded to 1e-6
    assert targets["command"] == 4 and targets["next_command"] == 1  # duplicate first point merged
    pert = G.perturb_points(expected[None], 0.6, 7.0)[0]
    np.testing.assert_allclose(targets["perturbated"]["target_point"], pert, atol=1e-6)
    np.testing.assert_allclose(targets["normal"]["future_waypoints"][0], [1.0, 0.0], atol=1e-6)  # k = 5
    assert targets["planning_valid"] is True
    json.dumps(targets)


def test_planning_valid_needs_41_future_steps():
    positions = np.zeros((40, 3), dtype=np.float32)
    targets = T.sample_targets(_meta(future_positions=positions, future_yaws=np.zeros(40)))
    assert targets["planning_valid"] is False
    assert len(targets["normal"]["future_waypoints"]) == 8
    assert T.sample_targets(_meta(future_positions=np.zeros((41, 3)), future_yaws=np.zeros(41)))[
        "planning_valid"
    ]


def test_missing_meta_key_names_the_meta_file(frame_inputs):
    meta = dict(frame_inputs.meta)
    del meta["next_target_points_3.25"]
    broken = FR.FrameInputs(**{**frame_inputs.__dict__, "meta": meta})
    with pytest.raises(LeadFormatError, match="metas/0005.pkl"):
        F.build_sample(broken)


def _static(type_id: str, x: float, y: float, **extra) -> dict:
    box = {
        "class": "static",
        "type_id": type_id,
        "extent": [0.2, 0.2, 0.5],
        "position": [x, y, 0.0],
        "yaw": 0.0,
        "id": int(100 * x + y),
        "num_points": 20,
        "visible_pixels": 40,
        "transfuser_semantics_id": 0,
    }
    box.update(extra)
    return box


def test_a_construction_site_is_filled_with_its_convex_hull():
    cones = [_static("static.prop.constructioncone", 10.0 + 2 * k, 6.0) for k in range(6)]  # 24 corners
    warnings = [
        _static("static.prop.trafficwarning", 12.0, 8.0 + k, extent=[1.0, 1.0, 0.5]) for k in range(3)
    ]
    occupancy = L.bev_occupancy(cones + warnings, _meta(), translation_m=0.0, rotation_deg=0.0)
    between = ((7.0 + 40) * 4, (16.0 + 32) * 4)  # y = 7 m, x = 16 m: inside the hull, outside every box
    assert occupancy[int(between[0]), int(between[1])] == L.OccupancyClass.OBSTACLE
    few = L.bev_occupancy(
        cones[:5] + warnings, _meta(), translation_m=0.0, rotation_deg=0.0
    )  # 20 cone corners
    assert few[int(between[0]), int(between[1])] == 0


def test_red_traffic_lights_affecting_the_ego_are_joined_by_a_hull():
    lights = [
        {
            "class": "traffic_light",
            "extent": [0.5, 0.5, 1.0],
            "position": [20.0, y, 0.0],
            "yaw": 0.0,
            "affects_ego": True,
            "state": "Red",
            "id": k,
        }
        for k, y in enumerate((-6.0, 6.0))
    ]
    occupancy = L.bev_occupancy(lights, _meta(), translation_m=0.0, rotation_deg=0.0)
    assert occupancy[(0 + 40) * 4, (20 + 32) * 4] == L.OccupancyClass.TRAFFIC_RED_NORMAL  # between the two
    green = [dict(light, state="Green") for light in lights]
    occupancy = L.bev_occupancy(green, _meta(), translation_m=0.0, rotation_deg=0.0)
    assert occupancy[(0 + 40) * 4, (20 + 32) * 4] == L.OccupancyClass.TRAFFIC_GREEN


def test_convex_hull_keeps_only_the_outer_points():
    points = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [1, 1], [1, 0]], dtype=np.int64)
    hull = raster.convex_hull(points)
    assert sorted(map(tuple, hull.tolist())) == [(0, 0), (0, 2), (2, 0), (2, 2)]
