"""Raw LEAD boxes of one frame → (n, 9) BoxField rows in BEV pixels and their future waypoints.

LEAD's `get_bbox_labels` (§4.4) and `bbox_json2array` (§4.3), without padding: boxes are stored unpadded
((n, 9), n <= 90), so there is no phantom CenterNet peak at cell (0, 0) (§9.8). The perturbated variant
passes its (translation_m, rotation_deg) and every box is moved with p' = R(r)^T (p - [0, t]),
psi' = wrap(psi - r) BEFORE the filters on position run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lead_stream.cache.labels.rules import (
    BOX_MAX_Z_M,
    BOX_WAYPOINT_MAX_JUMP_M,
    CAR_OPEN_DOOR_EXTRA_WIDTH_M,
    CONSTRUCTION_CONE_HALF_EXTENT_M,
    MESH_HALF_EXTENTS_M,
    OBSTACLE_SCENARIOS,
    PARKING_MIN_LIDAR_POINTS,
    PARKING_MIN_VISIBLE_PIXELS,
    PARKING_SCENARIOS,
    PEDESTRIAN_MIN_LIDAR_POINTS,
    PEDESTRIAN_MIN_VISIBLE_PIXELS,
    STATIC_TYPES_WHITE_LIST,
    TRAFFIC_WARNING_HALF_EXTENT_M,
    VEHICLE_MIN_LIDAR_POINTS,
    VEHICLE_MIN_VISIBLE_PIXELS,
    biker_meshes,
    door_opens_left,
    scenario_type_of,
)
from lead_stream.core import geometry
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    EMERGENCY_MESHES,
    MAX_NUM_BBOXES,
    MAX_X_M,
    MAX_Y_M,
    MIN_X_M,
    MIN_Y_M,
    NUM_BOX_FIELDS,
    NUM_WAYPOINTS,
    PIXELS_PER_M,
    WAYPOINT_SPACING_STEPS,
    BoxClass,
    BoxField,
    SemanticClass,
)


def _occluded(box: dict[str, Any], semantics_id: int | None) -> bool:
    """LEAD's get_bbox_labels occlusion rule: known (>= 0) LiDAR points and visible pixels both too low."""
    num_points = box.get("num_points", -1)
    visible = box.get("visible_pixels", -1)
    num_points = -1 if num_points is None else num_points
    visible = -1 if visible is None else visible

    def low(min_points: int, min_pixels: int) -> bool:
        return 0 <= num_points < min_points and 0 <= visible < min_pixels

    pedestrian_low = low(PEDESTRIAN_MIN_LIDAR_POINTS, PEDESTRIAN_MIN_VISIBLE_PIXELS)
    if semantics_id == SemanticClass.PEDESTRIAN and pedestrian_low:
        return True
    if (
        semantics_id == SemanticClass.VEHICLE
        and box["class"] == "static"
        and low(PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS)
    ):
        return True
    return semantics_id == SemanticClass.VEHICLE and low(VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS)


def _perturbed_centers(
    boxes: list[dict[str, Any]], translation_m: float, rotation_deg: float
) -> np.ndarray | None:
    """(len(boxes), 2) float64 perturbated box centres, row i bit-identical to `perturb_points` of box i's
    (1, 2) position alone; None when a box lacks a plain (x, y, ...) position (the caller then goes box by
    box and fails where it always did)."""
    try:
        positions = np.array([box["position"][:2] for box in boxes], dtype=np.float64)
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if positions.shape != (len(boxes), 2):
        return None
    return geometry.perturb_point_rows(positions, translation_m, rotation_deg)


def box_labels(
    boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float, rotation_deg: float
) -> np.ndarray:
    """LEAD's `get_bbox_labels` (§4.4) without padding: filtered boxes in BEV pixel coordinates (see
    `box_labels_and_sources`)."""
    return box_labels_and_sources(boxes, meta, translation_m=translation_m, rotation_deg=rotation_deg)[0]


def box_labels_and_sources(
    boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float, rotation_deg: float
) -> tuple[np.ndarray, list[int]]:
    """LEAD's `get_bbox_labels` (§4.4) without padding: filtered boxes in BEV pixel coordinates, and for each
    kept row the index of its box in `boxes` (for `box_waypoints`).

    Args:
        boxes: bboxes/NNNN.pkl dicts (true ego frame, sorted by distance).
        meta: the frame's meta (scenario type, scenario_obstacles_ids, door flags).
        translation_m, rotation_deg: the variant's perturbation (0, 0 for the normal variant).

    Returns:
        (n, 9) float32 BoxField columns, n <= 90; X/Y/W/H in BEV pixels, YAW radians, VELOCITY m/s; and the
        n source indices into `boxes`.
    """
    scenario_type = scenario_type_of(meta)
    bikers = biker_meshes(meta)  # motorcycles are bikers in legacy metas only
    sources: list[int] = []
    obstacle_ids = set(meta.get("scenario_obstacles_ids") or [])
    centers = _perturbed_centers(boxes, translation_m, rotation_deg)
    rows: list[np.ndarray] = []
    for box_idx, box in enumerate(boxes):
        cls = box["class"]
        if cls == "ego_car":
            continue
        position = box["position"]
        if centers is not None:
            x, y = centers[box_idx]
        else:
            x, y = geometry.perturb_points(
                np.array([position[:2]], dtype=np.float64), translation_m, rotation_deg
            )[0]
        row = np.zeros(NUM_BOX_FIELDS, dtype=np.float32)
        row[[BoxField.X, BoxField.Y, BoxField.W, BoxField.H]] = (x, y, box["extent"][0], box["extent"][1])
        row[BoxField.YAW] = geometry.wrap_angle(float(box["yaw"]) - math.radians(rotation_deg))
        row[BoxField.NUM_RADAR_POINTS] = box.get("num_radar_points", -1)
        role_name = box.get("role_name") or ""
        type_id = box.get("type_id")
        if cls == "car":
            row[BoxField.VELOCITY] = box["speed"]
            brake = box["brake"]
            row[BoxField.BRAKE] = 0.0 if brake is None or np.isnan(brake) else brake
            emergency = "scenario" in role_name and type_id in EMERGENCY_MESHES
            row[BoxField.CLASS] = BoxClass.SPECIAL if emergency else BoxClass.VEHICLE
        elif cls == "walker":
            row[BoxField.VELOCITY] = box["speed"]
            row[BoxField.CLASS] = BoxClass.WALKER
        elif cls == "traffic_light":
            row[BoxField.CLASS] = BoxClass.TRAFFIC_LIGHT
        elif cls == "stop_sign":
            row[BoxField.CLASS] = BoxClass.STOP_SIGN
        elif cls == "static":
            row[BoxField.CLASS] = BoxClass.PARKING

        if "num_points" in box and _occluded(box, box.get("transfuser_semantics_id")):
            continue
        if cls == "traffic_light" and (not box["affects_ego"] or box["state"] == "Green"):
            continue
        if cls == "stop_sign" and not box["affects_ego"]:
            continue
        height = float(position[2])
        if not (
            MIN_X_M < row[BoxField.X] < MAX_X_M
            and MIN_Y_M < row[BoxField.Y] < MAX_Y_M
            and -BOX_MAX_Z_M < height < BOX_MAX_Z_M
        ):
            continue
        mesh_path = box.get("mesh_path")
        is_parking = (cls == "static" and mesh_path is not None and "ParkedVehicles" in mesh_path) or (
            cls == "static_prop_car"
        )
        whitelisted = type_id in STATIC_TYPES_WHITE_LIST
        if cls == "static" and type_id is not None and not whitelisted and not is_parking:
            continue
        if type_id == "static.prop.trafficwarning":
            row[[BoxField.W, BoxField.H]] = TRAFFIC_WARNING_HALF_EXTENT_M
            row[BoxField.CLASS] = BoxClass.OBSTACLE
        elif type_id == "static.prop.constructioncone":
            row[[BoxField.W, BoxField.H]] = CONSTRUCTION_CONE_HALF_EXTENT_M
            row[BoxField.CLASS] = BoxClass.OBSTACLE
        if "mesh_path" in box:
            if mesh_path in MESH_HALF_EXTENTS_M:
                row[[BoxField.W, BoxField.H]] = MESH_HALF_EXTENTS_M[mesh_path]
            if is_parking:
                row[BoxField.CLASS] = BoxClass.PARKING
        if cls == "static_prop_car":
            row[BoxField.CLASS] = BoxClass.PARKING
        if cls == "car" and "scenario" in role_name and box["speed"] < 0.1:
            if scenario_type == "VehicleOpensDoorTwoWays" and box["id"] in obstacle_ids:
                opened = bool(meta.get("vehicle_opened_door", False))
                if opened:
                    row[BoxField.H] += CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2
                    shift = CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2
                    row[BoxField.Y] += shift if door_opens_left(meta) else -shift
                if row[BoxField.CLASS] != BoxClass.SPECIAL:
                    row[BoxField.CLASS] = BoxClass.OBSTACLE if opened else BoxClass.PARKING
            elif row[BoxField.CLASS] != BoxClass.SPECIAL:
                if scenario_type in OBSTACLE_SCENARIOS and box["id"] in obstacle_ids:
                    row[BoxField.CLASS] = BoxClass.OBSTACLE
                elif scenario_type in PARKING_SCENARIOS and box.get("lane_type_str") == "Parking":
                    row[BoxField.CLASS] = BoxClass.PARKING
        if type_id in bikers:
            row[BoxField.CLASS] = BoxClass.BIKER
        # vehicle → BEV pixel system (LEAD's bb_vehicle_to_image_system)
        row[BoxField.X] = (row[BoxField.X] - MIN_X_M) * PIXELS_PER_M
        row[BoxField.Y] = (row[BoxField.Y] - MIN_Y_M) * PIXELS_PER_M
        row[BoxField.W] *= PIXELS_PER_M
        row[BoxField.H] *= PIXELS_PER_M
        if not (0 <= row[BoxField.X] < BEV_WIDTH_PX and 0 <= row[BoxField.Y] < BEV_HEIGHT_PX):
            continue
        rows.append(row)
        sources.append(box_idx)
        if len(rows) == MAX_NUM_BBOXES:
            break
    if not rows:
        return np.zeros((0, NUM_BOX_FIELDS), dtype=np.float32), sources
    return np.stack(rows).astype(np.float32), sources


def box_waypoints(
    boxes: list[dict[str, Any]], sources: list[int], *, translation_m: float, rotation_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """LEAD's per-box future waypoints (`bbox_json2array`, §4.3) of the kept boxes, in `sources` order.

    Waypoint k (k = 1..8) is the box's `future_positions[5 k]` (20 Hz → 0.25 s apart) while the track does
    not jump more than 10 m between waypoints (CARLA teleports vanished actors); the rest is extrapolated at
    constant speed along the last valid yaw, 0.25 s per step; the result is moved into the variant's frame.
    LEAD's quirk kept on purpose: a box without `future_positions` gets its raw (true-ego, unperturbated)
    position 8 times and count 0.

    Returns:
        (n, 8, 2) float32 ego-frame metres, and (n,) uint8 number of real (not extrapolated) waypoints.
    """
    out = np.zeros((len(sources), NUM_WAYPOINTS, 2), dtype=np.float32)
    counts = np.zeros(len(sources), dtype=np.uint8)
    for row, box_idx in enumerate(sources):
        out[row], counts[row] = _one_box_waypoints(boxes[box_idx], translation_m, rotation_deg)
    return out, counts


def _one_box_waypoints(
    box: dict[str, Any], translation_m: float, rotation_deg: float
) -> tuple[np.ndarray, int]:
    """One box's (8, 2) float32 waypoints and count, with LEAD's arithmetic (dtypes included)."""
    position = box["position"]
    waypoints = np.array([(position[0], position[1])] * NUM_WAYPOINTS, dtype=np.float32)
    future = box.get("future_positions")
    if future is None:
        return waypoints, 0
    count = 0
    last_pos = np.array([position[0], position[1]])
    last_yaw, last_speed = box["yaw"], box.get("speed", 0.0)
    for i in range(NUM_WAYPOINTS):
        step = (i + 1) * WAYPOINT_SPACING_STEPS
        if step < len(future):
            if np.linalg.norm(last_pos - future[step]) > BOX_WAYPOINT_MAX_JUMP_M:
                break
            waypoints[i] = future[step]
            count += 1
            last_pos = future[step]
            last_yaw = box["future_yaws"][step]
            last_speed = box["future_speeds"][step] if "future_speeds" in box else last_speed
    last = waypoints[count - 1] if count > 0 else np.array([position[0], position[1]])
    dt = 1 / (WAYPOINT_SPACING_STEPS - 1)  # LEAD's constant: 0.25 s with a spacing of 5 steps
    for i in range(count, NUM_WAYPOINTS):
        last = last + np.array([last_speed * dt * np.cos(last_yaw), last_speed * dt * np.sin(last_yaw)])
        waypoints[i] = last.copy()
    perturbed = geometry.perturb_point_rows(waypoints.astype(np.float64), translation_m, rotation_deg)
    return perturbed.astype(np.float32), count
