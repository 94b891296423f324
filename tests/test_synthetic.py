"""synthetic: the generated tree has LEAD's exact layout, encodings and keys; it is seeded and coherent."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import laspy
import numpy as np
import pytest
from PIL import Image

from lead_stream import synthetic
from lead_stream.core import layout
from lead_stream.core.constants import (
    CAMERA_FOV_DEG,
    CAMERA_POSITIONS_M,
    CAMERA_WIDTH_PX,
    CAMERA_YAWS_DEG,
    META_KEYS_REMOVED_IN_CURRENT,
    RESULT_INFRACTION_KEYS,
    SCENARIO_TYPES,
    TP_DISTANCES_M,
    SemanticClass,
)
from lead_stream.sources import Route, discover_routes
from lead_stream.synthetic import write_synthetic_lead

NUM_ROUTES = 4  # conftest.lead_root: usable routes...
NUM_FRAMES = 24  # ...of this many frames each

# LEAD_FORMAT §10.3: keys LEAD's loader needs in every meta (KeyError otherwise), plus post-training keys
REQUIRED_META_KEYS = (
    "town",
    "current_active_scenario_type",
    "previous_active_scenario_type",
    "changed_route",
    "stop_sign_hazard",
    "walker_hazard",
    "light_hazard",
    "vehicle_hazard",
    "lane_type_str",
    "is_intersection",
    "reduce_speed_discontinuous_road",
    "reduce_speed_high_route_curvature",
    "does_emergency_brake_for_pedestrians",
    "construction_obstacle_two_ways_stuck",
    "accident_two_ways_stuck",
    "parked_obstacle_two_ways_stuck",
    "vehicle_opens_door_two_ways_stuck",
    "vehicle_opened_door",
    "vehicle_door_side",
    "ego_lane_id",
    "rear_danger_8",
    "rear_danger_16",
    "brake_cutin",
    "weather_setting",
    "jpeg_storage_quality",
    "emergency_brake_for_special_vehicle",
    "visual_visibility",
    "num_parking_vehicles_in_proximity",
    "slower_bad_visibility",
    "slower_clutterness",
    "slower_occluded_junction",
    "over_head_traffic_light",
    "europe_traffic_light",
    "stop_sign_close",
    "num_dangerous_adversarial",
    "num_safe_adversarial",
    "num_ignored_adversarial",
    "rear_adversarial_id",
    "speed",
    "theta",
    "pos_global",
    "perturbation_translation",
    "perturbation_rotation",
    "next_target_points_3.25",
    "next_commands_3.25",
    "previous_target_points_3.25",
    "scenario_obstacles_ids",
    "route",
    "future_positions",
    "future_yaws",
    "brake",
    "throttle",
    "target_speed",
)
RECOMMENDED_META_KEYS = (
    "future_speeds",
    "past_positions",
    "past_yaws",
    "past_speeds",
    "ego_matrix",
    "privileged_yaw",
    "steer",
    "weather_parameters",
    "route_curvature",
    "distance_to_next_junction",
    "dist_to_pedestrian",
    "target_speed_limit",
    "noisy_pos_global",
    "next_target_points",
    "next_commands",
)
ROUTE_DIR = re.compile(r"^(Town\w+)_Rep0_route_\d{6}_route(\d+)_(\d\d)_(\d\d)_(\d\d)_(\d\d)_(\d\d)$")
MODALITY_DIRS = {
    "rgb",
    "rgb_perturbated",
    "semantics",
    "semantics_perturbated",
    "depth",
    "depth_perturbated",
    "hdmap",
    "hdmap_perturbated",
    "lidar",
    "radar",
    "radar_perturbated",
    "bboxes",
    "metas",
}


def _routes(root: Path) -> list[Route]:
    return [Route(root, r) for r in discover_routes(root)]


def _usable(root: Path) -> list[Route]:
    return [r for r in _routes(root) if r.usability()[0]]


def _to_ego(points: np.ndarray, meta: dict) -> np.ndarray:
    """World [x, y(, z)] → ego frame of `meta`: R(theta)^T (p - pos)."""
    c, s = math.cos(meta["theta"]), math.sin(meta["theta"])
    d = np.asarray(points, np.float64)[..., :2] - np.asarray(meta["pos_global"][:2])
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


# --- layout -------------------------------------------------------------------------------------------------
def test_tree_has_lead_folders_names_and_counts(lead_root: Path) -> None:
    routes = _routes(lead_root)
    assert len(routes) == NUM_ROUTES + 3
    for route in routes:
        assert route.scenario in SCENARIO_TYPES
        town, idx = ROUTE_DIR.match(route.path.name).group(1, 2)
        finished = route.results() is not None
        expected = MODALITY_DIRS if finished else MODALITY_DIRS - {"metas", "bboxes"}
        assert {p.name for p in route.path.iterdir() if p.is_dir()} == expected
        assert (route.path / "results.json").is_file() == finished
        for name in expected:
            modality = name.removesuffix(layout.PERTURBATED_SUFFIX)
            files = sorted(p.name for p in (route.path / name).iterdir())
            assert files == [f"{i:04d}.{layout.MODALITY_EXT[modality]}" for i in range(NUM_FRAMES)], name
        if finished:
            meta = route.meta(0)
            assert meta["town"] == town
            assert route.results()["index"] == int(idx)


def test_files_use_lead_encodings(lead_root: Path) -> None:
    route = _usable(lead_root)[0]
    pkl = layout.modality_path(route.path, "metas", 7).read_bytes()
    assert pkl[:6] == b"\xfd7zXZ\x00"  # xz container, like lzma.open(..., "wb")
    for perturbated in (False, True):
        jpeg = layout.modality_path(route.path, "rgb", 7, perturbated=perturbated).read_bytes()
        assert jpeg[:3] == b"\xff\xd8\xff"
        for modality, size, values in (
            ("semantics", (1152, 384), range(10)),
            ("depth", (288, 96), range(256)),
            ("hdmap", (256, 256), (0, 1, 3, 4)),
        ):
            with Image.open(layout.modality_path(route.path, modality, 7, perturbated=perturbated)) as image:
                assert image.format == "PNG" and image.mode == "L" and image.size == size
                assert set(np.unique(np.asarray(image)).tolist()) <= set(values)
        with np.load(layout.modality_path(route.path, "radar", 7, perturbated=perturbated)) as npz:
            assert sorted(npz.files) == ["radar1", "radar2", "radar3", "radar4"]
            assert all(npz[k].dtype == np.float16 and npz[k].shape[1:] == (4,) for k in npz.files)
            assert all(len(npz[k]) <= 75 for k in npz.files)
    las = laspy.read(layout.modality_path(route.path, "lidar", 7))
    assert las.header.point_format.id == 0
    np.testing.assert_allclose(las.header.scales, [0.1, 0.1, 0.1])
    np.testing.assert_allclose(las.header.offsets, np.min(las.xyz, axis=0), atol=0.1)
    assert las["time"].dtype == np.uint8
    assert set(np.unique(las["time"]).tolist()) == set(range(10))  # 5 LiDAR sweeps, 10 radar ticks
    assert 5_000 <= len(las.points) <= 60_000
    x, y, z = las.xyz.T
    assert x.min() >= -32 and x.max() < 64 and y.min() >= -40 and y.max() < 40 and z.min() >= -1.3


def test_pickles_load_under_numpy_1_26(lead_root: Path) -> None:
    """LEAD pins numpy 1.26.0, which has no `numpy._core`: metas/boxes must name numpy 1.x globals only."""
    import lzma
    import pickletools

    route = _usable(lead_root)[0]
    for modality in ("metas", "bboxes"):
        payload = lzma.decompress(layout.modality_path(route.path, modality, 7).read_bytes())
        ops = list(pickletools.genops(payload))
        assert ops[0][0].name == "PROTO" and ops[0][1] == 5
        strings = {arg for op, arg, _ in ops if op.name in ("SHORT_BINUNICODE", "BINUNICODE")}
        numpy_modules = {s for s in strings if isinstance(s, str) and s.startswith("numpy")}
        assert numpy_modules and not any(s.startswith("numpy._core") for s in numpy_modules)
        assert numpy_modules <= {"numpy", "numpy.core.numeric", "numpy.core.multiarray"}


def test_legacy_meta_has_the_8bb1118_keys_12(legacy_root: Path) -> None:
    route = next(
        Route(legacy_root, r) for r in discover_routes(legacy_root) if Route(legacy_root, r).usability()[0]
    )
    meta = route.meta(5)
    assert set(REQUIRED_META_KEYS + RECOMMENDED_META_KEYS) <= set(meta)
    assert "dataset_information" not in meta and "filtered_pos_global" not in meta
    assert max(len(meta["future_positions"]), len(meta["past_positions"])) > 61  # <= 201 entries


def test_meta_has_lead_keys_and_dtypes(lead_root: Path) -> None:
    route = _usable(lead_root)[0]
    meta = route.meta(NUM_FRAMES // 2)
    # the current LEAD schema (kesai-labs/lead 4489176, the default): six legacy keys gone, two dicts added
    assert set(REQUIRED_META_KEYS + RECOMMENDED_META_KEYS) - set(META_KEYS_REMOVED_IN_CURRENT) <= set(meta)
    assert not set(META_KEYS_REMOVED_IN_CURRENT) & set(meta) and "target_dataset" not in meta
    assert meta["dataset_information"]["save_depth_resolution_ratio"] == 4
    assert meta["dataset_information"]["target_dataset"] == 1
    assert (
        meta["sensor_information"]["num_cameras"] == 3
        and meta["sensor_information"]["num_radar_sensors"] == 4
    )
    assert len(meta["filtered_pos_global"]) == 2 and meta["noisy_pos_global"] != meta["filtered_pos_global"]
    assert len(meta["future_positions"]) <= 61 and len(meta["past_positions"]) <= 61
    for distance in TP_DISTANCES_M:
        for prefix in ("next_target_points", "next_commands", "previous_target_points", "previous_commands"):
            assert f"{prefix}_{distance}" in meta  # keys like 'next_target_points_3.25'
    assert len(meta["next_target_points_3.25"]) >= 2
    assert len(meta["next_commands_3.25"]) == len(meta["next_target_points_3.25"])
    assert set(meta["next_commands_3.25"]) <= {-1, 1, 2, 3, 4, 5, 6}
    assert meta["future_positions"].dtype == np.float32 and meta["future_positions"].shape[1] == 3
    assert 41 <= len(meta["future_positions"]) <= 201
    assert len(meta["future_yaws"]) == len(meta["future_positions"])
    assert meta["route"].dtype == np.float32 and 2 <= len(meta["route"]) <= 50 and meta["route"].shape[1] == 2
    assert meta["ego_matrix"].shape == (4, 4) and meta["ego_matrix"].dtype == np.float32
    assert meta["current_active_scenario_type"] in (*SCENARIO_TYPES, None)
    assert meta["vehicle_door_side"] in (None, "left", "right")
    assert meta["jpeg_storage_quality"] in (30, 90) and 0 <= meta["target_speed"] <= 20
    assert any(meta[k] is None for k in ("dist_to_construction_site", "dist_to_accident_site"))


def test_boxes_have_lead_fields(lead_root: Path) -> None:
    route = _usable(lead_root)[0]
    seen_classes = set()
    for frame_idx in range(0, NUM_FRAMES, 6):
        boxes = route.boxes(frame_idx)
        ego = boxes[0]
        assert ego["class"] == "ego_car" and ego["position"] == [0.0, 0.0, 0.0]
        assert ego["num_points"] == -1 and ego["visible_pixels"] == -1 and ego["transfuser_semantics_id"] == 0
        distances = [b["distance"] for b in boxes]
        assert distances == sorted(distances) and max(distances) <= 96.0
        assert len({b["id"] for b in boxes}) == len(boxes)
        for box in boxes[1:]:
            seen_classes.add(box["class"])
            assert {
                "class",
                "extent",
                "position",
                "yaw",
                "id",
                "num_points",
                "visible_pixels",
                "transfuser_semantics_id",
            } <= set(box)
            if box["class"] in ("car", "walker"):
                assert {"speed", "num_radar_points", "role_name", "future_positions", "future_yaws"} <= set(
                    box
                )
                assert box["future_positions"].dtype == np.float16 and box["future_positions"].shape[1] == 2
                assert len(box["future_positions"]) <= 41 and box["future_yaws"].dtype == np.float16
            if box["class"] == "car":
                assert {"brake", "type_id", "lane_type_str"} <= set(box)
                assert box["type_id"].startswith("vehicle.")
            if box["class"] == "static_prop_car":
                assert box["id"] >= 100_000_000
    assert {"car", "walker"} <= seen_classes


def test_results_json_is_a_full_route_record(lead_root: Path) -> None:
    kinds = []
    for route in _routes(lead_root):
        results = route.results()
        if results is None:
            kinds.append("unfinished")
            continue
        assert list(results) == [
            "timestamp",
            "index",
            "route_id",
            "status",
            "num_infractions",
            "infractions",
            "scores",
            "meta",
        ]
        assert set(results["infractions"]) == set(RESULT_INFRACTION_KEYS)
        assert results["num_infractions"] == sum(len(v) for v in results["infractions"].values())
        assert route.path.name.endswith(results["timestamp"])
        infractions = {k for k, v in results["infractions"].items() if v}
        kinds.append((results["status"], results["scores"]["score_composed"] == 100, frozenset(infractions)))
    assert ("Perfect", True, frozenset()) in kinds
    assert ("Completed", False, frozenset({"min_speed_infractions"})) in kinds
    assert ("Completed", False, frozenset({"min_speed_infractions", "outside_route_lanes"})) in kinds
    assert ("Completed", False, frozenset({"collisions_vehicle"})) in kinds
    assert ("Failed - Agent crashed", False, frozenset()) in kinds
    assert "unfinished" in kinds


def test_perturbation_is_constant_per_route_and_in_range(lead_root: Path) -> None:
    for route in _usable(lead_root):
        values = {
            (route.meta(i)["perturbation_translation"], route.meta(i)["perturbation_rotation"])
            for i in (0, NUM_FRAMES // 2, NUM_FRAMES - 1)
        }
        assert len(values) == 1
        translation, rotation = values.pop()
        assert 0.1 <= abs(translation) <= 1.0 and 0.5 <= abs(rotation) <= 12.5


# --- coherence ----------------------------------------------------------------------------------------------
def test_future_positions_match_the_next_frames_pose(lead_root: Path) -> None:
    for route in _usable(lead_root):
        for frame_idx in (0, 9, NUM_FRAMES - 2):
            meta, nxt = route.meta(frame_idx), route.meta(frame_idx + 1)
            expected = _to_ego(np.array(nxt["pos_global"]), meta)
            np.testing.assert_allclose(meta["future_positions"][5, :2], expected, atol=1e-3)
            step_m = np.linalg.norm(np.diff(meta["future_positions"][:6, :2], axis=0), axis=1)
            np.testing.assert_allclose(step_m, meta["future_speeds"][:5] / 20, atol=1e-3)  # speed / 20 Hz
            assert meta["future_speeds"][0] == pytest.approx(meta["speed"])
            yaw_change = nxt["theta"] - meta["theta"]
            assert abs(math.remainder(meta["future_yaws"][5] - yaw_change, 2 * math.pi)) < 1e-3
            matrix = meta["ego_matrix"]
            np.testing.assert_allclose(matrix[:2, 3], meta["pos_global"][:2], atol=1e-2)
            matrix_yaw = math.atan2(matrix[1, 0], matrix[0, 0])
            assert abs(math.remainder(matrix_yaw - meta["theta"], 2 * math.pi)) < 1e-5


def test_target_points_and_route_lie_ahead(lead_root: Path) -> None:
    for route in _usable(lead_root):
        for frame_idx in range(0, NUM_FRAMES, 5):
            meta = route.meta(frame_idx)
            points = _to_ego(np.array(meta["next_target_points_3.25"]), meta)
            assert points[1, 0] > 0  # the target point is ahead
            assert points[0, 0] < 3.25 + 1e-6  # the popped one is behind or within 3.25 m
            gaps = np.linalg.norm(np.diff(points, axis=0), axis=1)
            assert np.all(gaps[:-1] >= 20.0)  # sparse keypoints, tens of metres apart
            np.testing.assert_allclose(meta["route"][0], [2.5, 0.0], atol=0.2)
            np.testing.assert_allclose(np.linalg.norm(np.diff(meta["route"], axis=0), axis=1), 1.0, atol=0.05)
            assert np.all(meta["future_positions"][:41, 0] >= -1e-3)  # the ego never reverses


def test_actors_appear_in_lidar_camera_and_radar(lead_root: Path) -> None:
    hits = {"lidar": 0, "semantics": 0, "radar": 0}
    for route in _usable(lead_root)[:2]:
        for frame_idx in range(0, NUM_FRAMES, 4):
            boxes, lidar = route.boxes(frame_idx), route.lidar(frame_idx)
            sem = route.semantics(frame_idx)
            for box in boxes[1:]:
                x, y = box["position"][:2]
                local = lidar[:, :2] - [x, y]
                c, s = math.cos(box["yaw"]), math.sin(box["yaw"])
                bx, by = c * local[:, 0] + s * local[:, 1], -s * local[:, 0] + c * local[:, 1]
                inside = (np.abs(bx) <= box["extent"][0] + 0.2) & (np.abs(by) <= box["extent"][1] + 0.2)
                if box["num_points"] > 0:
                    assert (inside & (lidar[:, 3] == 0)).sum() >= 0.9 * box["num_points"]
                    hits["lidar"] += 1
                if box["class"] == "car" and box["num_radar_points"] > 0:
                    hits["radar"] += 1
                is_car = box["class"] == "car" and box["transfuser_semantics_id"] == SemanticClass.VEHICLE
                if is_car and box["visible_pixels"] > 200:
                    column = _front_column(x, y)
                    if column is not None:
                        assert (sem[:, max(column - 3, 0) : column + 4] == SemanticClass.VEHICLE).any()
                        hits["semantics"] += 1
            assert (sem == SemanticClass.ROAD).mean() > 0.1 and (sem == SemanticClass.ROAD_LINE).any()
    assert hits["lidar"] >= 10 and hits["semantics"] >= 1 and hits["radar"] >= 5, hits


def _front_column(x: float, y: float) -> int | None:
    """Image column of ego-frame ground point (x, y) in the front camera, None if outside its view."""
    (cx, cy, _), yaw = CAMERA_POSITIONS_M[1], CAMERA_YAWS_DEG[1]
    assert yaw == 0.0
    if x - cx < 2.0:
        return None
    focal = (CAMERA_WIDTH_PX / 2) / math.tan(math.radians(CAMERA_FOV_DEG / 2))
    u = focal * (y - cy) / (x - cx) + CAMERA_WIDTH_PX / 2
    return CAMERA_WIDTH_PX + int(u) if 0 <= u < CAMERA_WIDTH_PX else None


def test_hdmap_has_the_road_under_the_ego_and_perturbated_views_shift(lead_root: Path) -> None:
    route = _usable(lead_root)[0]
    for frame_idx in (0, NUM_FRAMES - 1):
        hdmap = route.hdmap(frame_idx)
        assert hdmap[126:131, 126:131].max() >= 1  # the ego (128, 128) stands on the road
        assert (hdmap == 3).any() and (hdmap == 4).any()
        # the route runs along the road band: its points are on road pixels
        meta = route.meta(frame_idx)
        rows = np.clip((128 + 2 * meta["route"][:, 1]).astype(int), 0, 255)
        cols = np.clip((128 + 2 * meta["route"][:, 0]).astype(int), 0, 255)
        on_map = cols < 255
        assert (hdmap[rows[on_map], cols[on_map]] > 0).mean() > 0.9
        # the perturbated map is rendered around the shifted, rotated rig: p' = R(r)^T (p - [0, t])
        t, r = meta["perturbation_translation"], math.radians(meta["perturbation_rotation"])
        shifted = meta["route"] - np.array([0.0, t], np.float32)
        pert = np.stack(
            [
                math.cos(r) * shifted[:, 0] + math.sin(r) * shifted[:, 1],
                -math.sin(r) * shifted[:, 0] + math.cos(r) * shifted[:, 1],
            ],
            axis=1,
        )
        pert_map = route.hdmap(frame_idx, perturbated=True)
        rows = np.clip((128 + 2 * pert[:, 1]).astype(int), 0, 255)
        cols = np.clip((128 + 2 * pert[:, 0]).astype(int), 0, 255)
        assert (pert_map[rows, cols] > 0).mean() > 0.9
        assert not np.array_equal(hdmap, pert_map)
        assert not np.array_equal(route.semantics(frame_idx), route.semantics(frame_idx, perturbated=True))


# --- determinism and speed knobs ----------------------------------------------------------------------------
def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"num_routes": 1, "num_frames": 2, "num_rejected": 1}
    first = write_synthetic_lead(tmp_path / "a", seed=5, workers=1, **kwargs)
    # same bytes when routes are split across processes (FRAMES_PER_TASK is read by the writer module)
    monkeypatch.setattr(synthetic.writer, "FRAMES_PER_TASK", 1)
    write_synthetic_lead(tmp_path / "b", seed=5, workers=2, **kwargs)
    monkeypatch.undo()
    write_synthetic_lead(tmp_path / "c", seed=6, workers=1, **kwargs)
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert len(first.route_ids) == 2 and first.usable_route_ids != first.rejected_route_ids
    assert a.keys() != c.keys()  # names derive from the seed
    first_jpegs = [{v for k, v in tree.items() if k.endswith("0000.jpg")} for tree in (a, c)]
    assert first_jpegs[0] != first_jpegs[1]


def test_summary_counts_and_argument_checks(tmp_path: Path) -> None:
    summary = write_synthetic_lead(tmp_path, num_routes=2, num_frames=1, num_rejected=0, workers=1)
    assert summary.num_frames == 1 and len(summary.usable_route_ids) == 2 and summary.rejected_route_ids == ()
    assert sorted(summary.route_ids) == discover_routes(tmp_path)
    assert "2 routes" in summary.one_line()
    statuses = [
        json.loads((layout.route_path(tmp_path, r) / "results.json").read_text())["status"]
        for r in summary.route_ids
    ]
    assert sorted(statuses) == ["Completed", "Perfect"]
    with pytest.raises(ValueError):
        write_synthetic_lead(tmp_path, num_routes=1, num_frames=0)
    with pytest.raises(ValueError):
        write_synthetic_lead(tmp_path, num_routes=0, num_rejected=0)
