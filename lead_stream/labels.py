"""Raw LEAD boxes, hdmap and radar of one frame → label arrays in the BEV frame (pure, hand-testable).

Input: bboxes/NNNN.pkl dicts and the frame meta (true ego frame), a (256, 256) ChauffeurNet hdmap, radar
point arrays. Output: `box_labels` (n, 9) BoxField rows in BEV pixels, `bev_occupancy` (320, 384) classes,
`hdmap_to_bev` / `merge_bev_semantic` (320, 384) BEV semantics, `radar_points` and `radar_detection_labels`.
Semantics follow LEAD's `CARLAData` (LEAD_FORMAT §4.1 step 10; §4.4). The one non-obvious rule: the
perturbated variant passes its (translation_m, rotation_deg), and every box is moved with
p' = R(r)^T (p - [0, t]), psi' = wrap(psi - r) BEFORE the filters on position run.

Differences from LEAD, on purpose:
* boxes are stored unpadded ((n, 9), n <= 90), so no phantom CenterNet peak at cell (0, 0) (§9.8);
* BEV occupancy is drawn directly on the 320 x 384 BEV grid from rotated box rectangles with LEAD's
  per-class labels, walker/biker scaling (x2.5, >= 0.4 m), occlusion filters and convex hulls
  (construction sites, scenario obstacles, red/green light groups), with sub-pixel polygon rasterisation
  instead of cv2's integer corners on a 1024 x 1024 grid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lead_stream import geometry
from lead_stream.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    BIKER_MESHES,
    EMERGENCY_MESHES,
    HDMAP_TO_BEV_SEMANTIC,
    MAX_NUM_BBOXES,
    MAX_RADAR_POINTS_PER_SENSOR,
    MAX_X_M,
    MAX_Y_M,
    MIN_X_M,
    MIN_Y_M,
    NUM_BOX_FIELDS,
    NUM_RADAR_QUERIES,
    NUM_RADAR_SENSORS,
    NUM_WAYPOINTS,
    PIXELS_PER_M,
    WAYPOINT_SPACING_STEPS,
    BoxClass,
    BoxField,
    SemanticClass,
)

# --- LEAD label constants (lead/common/constants.py, config_training.py) ---------------------------
BOX_MAX_Z_M = 4.0                                  # boxes with z outside (-4, 4) are dropped (§4.4)
CONSTRUCTION_CONE_HALF_EXTENT_M = (0.1720348298549652, 0.1720348298549652)
TRAFFIC_WARNING_HALF_EXTENT_M = (1.186714768409729, 1.4352929592132568)
STATIC_TYPES_WHITE_LIST = ("static.prop.constructioncone", "static.prop.trafficwarning")
CAR_OPEN_DOOR_EXTRA_WIDTH_M = 1.2
BOX_WAYPOINT_MAX_JUMP_M = 10.0                     # max_distance_future_waypoint
CONSTRUCTION_SITE_RADIUS_M = 24.0                  # construction-site hull: every corner within 24 m of the mean
OBSTACLE_SITE_RADIUS_M = 48.0                      # scenario-obstacle hull: within 48 m
HULL_GRID_HALF_SIZE_M = 128.0                      # LEAD draws occupancy on a 1024 px grid at 4 px/m
PEDESTRIAN_MIN_LIDAR_POINTS, PEDESTRIAN_MIN_VISIBLE_PIXELS = 5, 15
PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS = 3, 5
VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS = 1, 1
WALKER_BEV_SCALE = 2.5                              # scale_pedestrian_bev_semantic_size
WALKER_BEV_MIN_HALF_EXTENT_M = 0.4                  # pedestrian_bev_min_extent
OBSTACLE_SCENARIOS = ("Accident", "AccidentTwoWays", "BlockedIntersection", "ParkedObstacle",
                      "ParkedObstacleTwoWays")
PARKING_SCENARIOS = ("ParkingCrossingPedestrian", "ParkingCutIn", "StaticCutIn", "PedestrianCrossing",
                     "ParkingExit")
# parked-vehicle / prop mesh path → half extents (x, y) in metres (LEAD's LOOKUP_TABLE)
MESH_HALF_EXTENTS_M: dict[str, tuple[float, float]] = {
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Lincoln/SM_LincolnParked.SM_LincolnParked":
        (2.44619083404541, 1.115301489830017),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Charger/SM_ChargerParked.SM_ChargerParked":
        (2.5039126873016357, 1.0485419034957886),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/VolkswagenT2/SM_VolkswagenT2_2021_Parked."
    "SM_VolkswagenT2_2021_Parked": (2.2210919857025146, 0.9388753771781921),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/FordCrown/SM_FordCrown_parked.SM_FordCrown_parked":
        (2.6828393936157227, 0.9732309579849243),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/NissanPatrol2021/SM_NissanPatrol2021_parked."
    "SM_NissanPatrol2021_parked": (2.782914400100708, 1.217571496963501),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/MercedesCCC/SM_MercedesCCC_Parked.SM_MercedesCCC_Parked":
        (2.3368194103240967, 1.0011461973190308),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/TeslaM3/SM_TeslaM3_parked.SM_TeslaM3_parked":
        (2.3958897590637207, 1.081725001335144),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Mini2021/SM_Mini2021_parked.SM_Mini2021_parked":
        (2.2763495445251465, 1.0926425457000732),
    "/Game/Carla/Static/Dynamic/Garden/SM_PlasticTable.SM_PlasticTable":
        (1.241101622581482, 1.241101622581482),
    "/Game/Carla/Static/Dynamic/Garden/SM_PlasticChair.SM_PlasticChair":
        (0.36523768305778503, 0.37522444128990173),
    "/Game/Carla/Static/Dynamic/Construction/SM_ConstructionCone.SM_ConstructionCone":
        (0.1720348298549652, 0.1720348298549652),
}


class OccupancyClass:
    """LEAD's TransfuserBEVOccupancyClass (bev_semantic = occupancy + 3 where occupied)."""

    VEHICLE, WALKER, OBSTACLE, PARKING_VEHICLE, SPECIAL_VEHICLE, BIKER = 1, 2, 3, 4, 5, 6
    TRAFFIC_GREEN, TRAFFIC_RED_NORMAL, TRAFFIC_RED_NOT_NORMAL = 7, 8, 9


OCCUPANCY_TO_BEV_OFFSET = 3
RADAR_PRIORITY = (BoxClass.SPECIAL, BoxClass.VEHICLE, BoxClass.WALKER, BoxClass.OBSTACLE, BoxClass.PARKING)
_HDMAP_LUT = np.array(HDMAP_TO_BEV_SEMANTIC, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------
# pure label functions (hand-testable)
# ---------------------------------------------------------------------------------------------------
def scenario_type_of(meta: dict[str, Any]) -> str:
    """LEAD's `scenario_type`: the current active scenario, else the previous one, else "NA"."""
    for key in ("current_active_scenario_type", "previous_active_scenario_type"):
        value = meta.get(key)
        if value is not None and value != "NA":
            return str(value)
    return "NA"


def _door_side(meta: dict[str, Any]) -> str | None:
    side = meta.get("vehicle_door_side")
    if isinstance(side, (list, tuple)):
        side = side[0] if side else None
    return side


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
    if (semantics_id == SemanticClass.VEHICLE and box["class"] == "static"
            and low(PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS)):
        return True
    return semantics_id == SemanticClass.VEHICLE and low(VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS)


def _perturbed_centers(boxes: list[dict[str, Any]], translation_m: float,
                       rotation_deg: float) -> np.ndarray | None:
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


def box_labels(boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float,
               rotation_deg: float) -> np.ndarray:
    """LEAD's `get_bbox_labels` (§4.4) without padding: filtered boxes in BEV pixel coordinates (see
    `box_labels_and_sources`)."""
    return box_labels_and_sources(boxes, meta, translation_m=translation_m, rotation_deg=rotation_deg)[0]


def box_labels_and_sources(boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float,
                           rotation_deg: float) -> tuple[np.ndarray, list[int]]:
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
            x, y = geometry.perturb_points(np.array([position[:2]], dtype=np.float64), translation_m,
                                           rotation_deg)[0]
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
        if not (MIN_X_M < row[BoxField.X] < MAX_X_M and MIN_Y_M < row[BoxField.Y] < MAX_Y_M
                and -BOX_MAX_Z_M < height < BOX_MAX_Z_M):
            continue
        mesh_path = box.get("mesh_path")
        is_parking = (cls == "static" and mesh_path is not None and "ParkedVehicles" in mesh_path) or (
            cls == "static_prop_car")
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
                    row[BoxField.Y] += shift if _door_side(meta) == "left" else -shift
                if row[BoxField.CLASS] != BoxClass.SPECIAL:
                    row[BoxField.CLASS] = BoxClass.OBSTACLE if opened else BoxClass.PARKING
            elif row[BoxField.CLASS] != BoxClass.SPECIAL:
                if scenario_type in OBSTACLE_SCENARIOS and box["id"] in obstacle_ids:
                    row[BoxField.CLASS] = BoxClass.OBSTACLE
                elif scenario_type in PARKING_SCENARIOS and box.get("lane_type_str") == "Parking":
                    row[BoxField.CLASS] = BoxClass.PARKING
        if type_id in BIKER_MESHES:
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


def box_waypoints(boxes: list[dict[str, Any]], sources: list[int], *, translation_m: float,
                  rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
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


def _one_box_waypoints(box: dict[str, Any], translation_m: float, rotation_deg: float) -> tuple[np.ndarray, int]:
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
    dt = 1 / (WAYPOINT_SPACING_STEPS - 1)   # LEAD's constant: 0.25 s with a spacing of 5 steps
    for i in range(count, NUM_WAYPOINTS):
        last = last + np.array([last_speed * dt * np.cos(last_yaw), last_speed * dt * np.sin(last_yaw)])
        waypoints[i] = last.copy()
    perturbed = geometry.perturb_point_rows(waypoints.astype(np.float64), translation_m, rotation_deg)
    return perturbed.astype(np.float32), count


def _occupancy_label(box: dict[str, Any], meta: dict[str, Any], scenario_type: str,
                     obstacle_ids: set) -> int | None:
    """LEAD's build_bev_occupancy class rules for one box; None = not drawn."""
    cls = box["class"]
    type_id = box.get("type_id") or ""
    scenario_stopped = ("scenario" in (box.get("role_name") or "") and cls == "car" and box["speed"] < 0.1)
    is_obstacle_actor = box.get("id") in obstacle_ids
    if cls == "car":
        if type_id in EMERGENCY_MESHES:
            if scenario_type in OBSTACLE_SCENARIOS and is_obstacle_actor:
                return OccupancyClass.OBSTACLE
            return OccupancyClass.SPECIAL_VEHICLE
        if type_id in BIKER_MESHES:
            return OccupancyClass.BIKER
        if scenario_stopped:
            if scenario_type in OBSTACLE_SCENARIOS and is_obstacle_actor:
                return OccupancyClass.OBSTACLE
            if scenario_type == "VehicleOpensDoorTwoWays" and is_obstacle_actor:
                opened = bool(meta.get("vehicle_opened_door", False))
                return OccupancyClass.OBSTACLE if opened else OccupancyClass.PARKING_VEHICLE
            if scenario_type in PARKING_SCENARIOS and box.get("lane_type_str") == "Parking":
                return OccupancyClass.PARKING_VEHICLE
        return OccupancyClass.VEHICLE
    if cls == "walker":
        return OccupancyClass.WALKER
    if cls == "static_prop_car":
        return OccupancyClass.PARKING_VEHICLE
    if cls == "static":
        mesh_path = box.get("mesh_path")
        if type_id in STATIC_TYPES_WHITE_LIST:
            return OccupancyClass.OBSTACLE
        if type_id in EMERGENCY_MESHES:
            return OccupancyClass.SPECIAL_VEHICLE
        if mesh_path is not None and "ParkedVehicles" in mesh_path:
            return OccupancyClass.PARKING_VEHICLE
        return None
    if cls == "traffic_light":
        if box["affects_ego"] and box["state"] in ("Red", "Yellow"):
            special = meta.get("over_head_traffic_light", False) or meta.get("europe_traffic_light", False)
            normal = not special
            return OccupancyClass.TRAFFIC_RED_NORMAL if normal else OccupancyClass.TRAFFIC_RED_NOT_NORMAL
        return OccupancyClass.TRAFFIC_GREEN if box["affects_ego"] else None
    return None


def _hull_group(box: dict[str, Any], meta: dict[str, Any], scenario_type: str, obstacle_ids: set,
                label: int) -> str | None:
    """Which of LEAD's corner lists (`build_bev_occupancy`) a drawn box's corners join, if any."""
    cls = box["class"]
    type_id = box.get("type_id") or ""
    if cls == "car":
        stopped = "scenario" in (box.get("role_name") or "") and box["speed"] < 0.1
        if label == OccupancyClass.OBSTACLE and (type_id in EMERGENCY_MESHES or stopped):
            return "obstacle"   # accident / parked-obstacle actors, a vehicle with its door open
        return None
    if cls == "static":
        if type_id == "static.prop.constructioncone":
            return "cone"
        if type_id == "static.prop.trafficwarning":
            return "warning"
        return "obstacle" if label == OccupancyClass.SPECIAL_VEHICLE else None
    if cls == "traffic_light":
        return {OccupancyClass.TRAFFIC_RED_NORMAL: "red", OccupancyClass.TRAFFIC_RED_NOT_NORMAL: "red_other",
                OccupancyClass.TRAFFIC_GREEN: "green"}.get(label)
    return None


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """(K, 2) vertices of the convex hull of (N, 2) points, counter-clockwise (Andrew's monotone chain)."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return pts
    def turn(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(ordered: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for point in ordered:
            while len(chain) >= 2 and turn(chain[-2], chain[-1], point) <= 0:
                chain.pop()
            chain.append(point)
        return chain
    ordered = [tuple(p) for p in pts.tolist()]
    lower, upper = half(ordered), half(ordered[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def _fill_hulls(image: np.ndarray, corners: dict[str, list[np.ndarray]]) -> None:
    """LEAD's convex hulls over groups of boxes, drawn after the boxes (`build_bev_occupancy`): a construction
    site (>= 3 warning corners and >= 24 cone corners, all within 24 m of their mean), scenario obstacles
    (>= 3 corners within 48 m), and the red (else green) traffic lights that affect the ego."""
    def stacked(*groups: str) -> np.ndarray:
        parts = [c for group in groups for c in corners[group]]
        return np.concatenate(parts) if parts else np.zeros((0, 2))

    def fill(points: np.ndarray, label: int) -> None:
        hull = _convex_hull(points)
        if len(hull) >= 3:
            mask = geometry.fill_convex(image.shape, geometry.metres_to_bev_px(hull)[None], [label])
            image[mask > 0] = label

    warnings_, cones = stacked("warning"), stacked("cone")
    if len(warnings_) >= 3 and len(cones) >= 24:
        site = np.concatenate([cones, warnings_])
        if (np.linalg.norm(site - site.mean(axis=0), axis=1) <= CONSTRUCTION_SITE_RADIUS_M).all():
            fill(site, OccupancyClass.OBSTACLE)
    obstacles = stacked("obstacle")
    if len(obstacles) >= 3 and (np.linalg.norm(obstacles - obstacles.mean(axis=0), axis=1)
                                <= OBSTACLE_SITE_RADIUS_M).all():
        fill(obstacles, OccupancyClass.OBSTACLE)
    for group, label in (("red_other", OccupancyClass.TRAFFIC_RED_NOT_NORMAL),
                         ("red", OccupancyClass.TRAFFIC_RED_NORMAL), ("green", OccupancyClass.TRAFFIC_GREEN)):
        if len(stacked(group)) >= 3:
            fill(stacked(group), label)
            break


_OCCUPANCY_THRESHOLDS = {"walker": (PEDESTRIAN_MIN_LIDAR_POINTS, PEDESTRIAN_MIN_VISIBLE_PIXELS),
                         "car": (VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS),
                         "static": (PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS),
                         "static_prop_car": (PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS)}


def bev_occupancy(boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float,
                  rotation_deg: float) -> np.ndarray:
    """LEAD's `build_bev_occupancy` on the 320 x 384 BEV grid, convex hulls included (see module doc).

    The class rules and filters run per box; the geometry (perturbation, corners, BEV test, pixel
    coordinates, fill) runs on all drawn boxes at once, bit-identical to doing it box by box.

    Returns:
        (320, 384) uint8 occupancy classes 0..9 (0 = free), later boxes drawn over earlier ones.
    """
    scenario_type = scenario_type_of(meta)
    obstacle_ids = set(meta.get("scenario_obstacles_ids") or [])
    positions: list[np.ndarray] = []      # (1, 2) float64 true-ego centre per drawn box
    yaws: list[float] = []                # perturbated yaw, radians
    half_extents: list[tuple[float, float]] = []
    door_shifts: list[tuple[int, float]] = []   # (box index, lateral shift added after the perturbation)
    box_labels_: list[int] = []
    drawn_boxes: list[bool] = []          # False: only its corners count (a hull member LEAD does not draw)
    groups: list[str | None] = []         # the corner list (`_hull_group`) of each box
    for box in boxes:
        cls = box["class"]
        if cls not in ("car", "walker", "static", "static_prop_car", "traffic_light"):
            continue
        label = _occupancy_label(box, meta, scenario_type, obstacle_ids)
        if label is None:
            continue
        group = _hull_group(box, meta, scenario_type, obstacle_ids, label)
        num_points = box.get("num_points", -1)
        visible = box.get("visible_pixels", -1)
        thresholds = _OCCUPANCY_THRESHOLDS.get(cls)
        occluded = (thresholds is not None and num_points is not None and visible is not None
                    and 0 <= num_points < thresholds[0] and 0 <= visible < thresholds[1])
        if occluded and group is None:
            continue
        type_id = box.get("type_id") or ""
        walker_like = cls == "walker" or type_id in BIKER_MESHES
        scale, min_extent = (WALKER_BEV_SCALE, WALKER_BEV_MIN_HALF_EXTENT_M) if walker_like else (1.0, 0.0)
        position = np.array([box["position"][:2]], dtype=np.float64)
        if position.shape != (1, 2):
            raise ValueError(f"box position needs x and y, found {box['position']!r}")
        yaw = geometry.wrap_angle(float(box["yaw"]) - math.radians(rotation_deg))
        extent_x = max(float(box["extent"][0]), min_extent)
        extent_y = max(float(box["extent"][1]), min_extent)
        if (cls == "car" and "scenario" in (box.get("role_name") or "") and box["speed"] < 0.1
                and box.get("id") in obstacle_ids and scenario_type == "VehicleOpensDoorTwoWays"
                and meta.get("vehicle_opened_door", False)):
            extent_y += CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2
            door_shifts.append((len(positions),
                                CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2 * (1 if _door_side(meta) == "left" else -1)))
        mesh_path = box.get("mesh_path")
        if "mesh_path" in box:
            if mesh_path in MESH_HALF_EXTENTS_M:
                extent_x, extent_y = MESH_HALF_EXTENTS_M[mesh_path]
        elif type_id == "static.prop.trafficwarning":
            extent_x, extent_y = TRAFFIC_WARNING_HALF_EXTENT_M
        elif type_id == "static.prop.constructioncone":
            extent_x, extent_y = CONSTRUCTION_CONE_HALF_EXTENT_M
        positions.append(position)
        yaws.append(yaw)
        half_extents.append((extent_x * scale, extent_y * scale))
        box_labels_.append(label)
        drawn_boxes.append(not occluded)
        groups.append(group)
    if not positions:
        return np.zeros((BEV_HEIGHT_PX, BEV_WIDTH_PX), dtype=np.uint8)
    centers = geometry.perturb_point_rows(np.concatenate(positions), translation_m, rotation_deg)
    for idx, shift in door_shifts:
        centers[idx, 1] += shift
    corners = geometry.box_corners_many(centers, np.array(half_extents, dtype=np.float64), yaws)  # (n, 4, 2)
    drawn = (geometry.in_bev(corners.reshape(-1, 2)).reshape(-1, 4).any(axis=1) | geometry.in_bev(centers)) & \
        np.array(drawn_boxes)
    vertices = geometry.metres_to_bev_px(corners[drawn].reshape(-1, 2)).reshape(-1, 4, 2)
    drawn_labels = [label for label, keep in zip(box_labels_, drawn.tolist(), strict=True) if keep]
    image = geometry.fill_convex((BEV_HEIGHT_PX, BEV_WIDTH_PX), vertices, drawn_labels)
    on_grid = (np.abs(centers) < HULL_GRID_HALF_SIZE_M).all(axis=1)   # LEAD's 1024 px (256 m) grid
    hull_corners: dict[str, list[np.ndarray]] = {g: [] for g in ("obstacle", "cone", "warning", "red",
                                                                "red_other", "green")}
    for k, group in enumerate(groups):
        if group is not None and on_grid[k]:
            hull_corners[group].append(corners[k])
    _fill_hulls(image, hull_corners)
    return image


def hdmap_to_bev(hdmap: np.ndarray) -> np.ndarray:
    """ChauffeurNet hdmap (256, 256) → BEV classes 0..3: rows 48:208, cols 64:256, upsampled x2 (nearest).

    Returns:
        (320, 384) uint8.

    Raises:
        ValueError: an id outside 0..8.
    """
    if hdmap.size and int(hdmap.max()) >= len(_HDMAP_LUT):
        raise ValueError(f"hdmap ids must be 0..{len(_HDMAP_LUT) - 1}, found {int(hdmap.max())}")
    window = hdmap[48:208, 64:256]
    crop = _HDMAP_LUT.take(window) if window.dtype.kind == "u" else _HDMAP_LUT[window]
    if crop.ndim != 2:
        return np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    # columns x2 in one pass: the uint16 v * 257 holds the byte v twice (either byte order)
    wide = (crop.astype(np.uint16) * 257).view(np.uint8)
    return np.repeat(wide, 2, axis=0)


def merge_bev_semantic(hdmap_bev: np.ndarray, occupancy: np.ndarray) -> np.ndarray:
    """LEAD §4.1 step 10: bev_semantic = hdmap where occupancy == 0 else occupancy + 3, uint8 0..12."""
    if hdmap_bev.dtype == occupancy.dtype == np.uint8 and hdmap_bev.shape == occupancy.shape:
        merged = hdmap_bev.copy()
        np.copyto(merged, occupancy + OCCUPANCY_TO_BEV_OFFSET, where=occupancy != 0)
        return merged
    return np.where(occupancy == 0, hdmap_bev, occupancy + OCCUPANCY_TO_BEV_OFFSET).astype(np.uint8)


def radar_points(radar: dict[str, np.ndarray]) -> np.ndarray:
    """Per sensor radar1..4: points inside the closed BEV box, first 75, plus sensor id 0..3.

    Returns:
        (n, 5) float16 [x, y, z, v, sensor_id], sensors in order, n <= 300 (no padding). float16 is LEAD's
        own radar dtype, so values are exact (the loader widens them to float32).
    """
    parts = []
    for sensor_idx in range(NUM_RADAR_SENSORS):
        points = np.asarray(radar[f"radar{sensor_idx + 1}"]).reshape(-1, 4)
        points = points[geometry.in_bev(points.astype(np.float32))][:MAX_RADAR_POINTS_PER_SENSOR]
        sensor_id = np.full((len(points), 1), sensor_idx, dtype=np.float16)
        parts.append(np.concatenate([points.astype(np.float16), sensor_id], axis=1))
    return np.concatenate(parts, axis=0).astype(np.float16, copy=False)


def radar_detection_labels(boxes_px: np.ndarray) -> np.ndarray:
    """LEAD's `parse_radar_detection_labels`: boxes with radar hits by (speed, class priority, hits), desc.

    Returns:
        (20, 4) float32 [x_m, y_m, v_mps, valid], zero rows after the last detection.
    """
    out = np.zeros((NUM_RADAR_QUERIES, 4), dtype=np.float32)
    boxes = boxes_px.astype(np.float32).copy()
    boxes[:, :4] /= PIXELS_PER_M
    boxes[:, :2] += np.array([MIN_X_M, MIN_Y_M], dtype=np.float32)
    nonzero = (boxes[:, BoxField.X] != 0.0) | (boxes[:, BoxField.Y] != 0.0)
    keep = nonzero & (boxes[:, BoxField.NUM_RADAR_POINTS] > 0)
    boxes = boxes[keep]
    if len(boxes) == 0:
        return out
    priority = {int(c): i for i, c in enumerate(RADAR_PRIORITY)}
    class_rank = np.array([priority.get(int(c), len(RADAR_PRIORITY)) for c in boxes[:, BoxField.CLASS]])
    order = np.lexsort((-boxes[:, BoxField.NUM_RADAR_POINTS], class_rank, -boxes[:, BoxField.VELOCITY]))
    chosen = boxes[order][:NUM_RADAR_QUERIES]
    out[: len(chosen), 0] = chosen[:, BoxField.X]
    out[: len(chosen), 1] = chosen[:, BoxField.Y]
    out[: len(chosen), 2] = chosen[:, BoxField.VELOCITY]
    out[: len(chosen), 3] = 1.0
    return out
