"""One LEAD frame → the named, encoded members of one sample (both sensor variants).

Input: a `FrameInputs` (raw arrays of one frame, read by `load_frame` from a `sources.Route`, or made by
hand in tests). Output: `build_sample(inputs) -> {member name: bytes}`, one entry per `MEMBERS` builder;
the builder name is the tar member name. A sample has four members:

    rgb.jpg, rgb_pert.jpg   original JPEG bytes (no re-encode) → (384, 1152, 3) uint8
    arrays.lz4              one `codecs.encode_arrays` container with two groups, "normal" and "perturbated"
                            (`VARIANTS`), each holding that sensor variant's arrays (`ARRAY_SPECS`) in its
                            own lz4 block, so a reader decompresses only the variant it serves
    targets.json            variant-independent scalars (speed, controls, commands, planning_valid, ...)

One container instead of one member per array saves ~12 KB of tar headers and padding per sample and lets
the loader decode a variant's arrays with one lz4 call. Plain webdataset yields `arrays.lz4` as bytes;
`lead_stream.codecs.decode("lz4", payload)` turns it into {"normal": {array name: array}, "perturbated": ...}. Semantics follow LEAD's `CARLAData` (LEAD_FORMAT
§4.1 steps 5, 7, 9, 10; §4.3; §4.4). The one non-obvious rule: the perturbated variant reads the
`*_perturbated` images/semantics/depth/hdmap/radar files but TRANSFORMS the shared LiDAR, boxes, target
points, waypoints, route and yaws with p' = R(r)^T (p - [0, t]), psi' = wrap(psi - r) (r in degrees).

Differences from LEAD, on purpose:
* boxes are stored unpadded ((n, 9), n <= 90), so no phantom CenterNet peak at cell (0, 0) (§9.8);
* LiDAR BEV is stored as uint8 counts 0..5 (LEAD: float counts / 5);
* depth is re-quantised with rounding (LEAD truncates, which can drop one 8-bit level);
* navigation / planning targets are stored as float32 (what training consumes), not float64;
* BEV occupancy is drawn directly on the 320 x 384 BEV grid from rotated box rectangles with LEAD's
  per-class labels, walker/biker scaling (x2.5, >= 0.4 m) and occlusion filters, but WITHOUT LEAD's convex
  hulls (construction sites, scenario obstacles, red/green light groups) and with sub-pixel polygon
  rasterisation instead of cv2's integer corners on a 1024 x 1024 grid;
* future waypoints / yaws are always 8 long: missing steps repeat the last one (zeros if none) and
  `planning_valid` is False (LEAD returns a shorter array);
* a route that `smooth_path` cannot resample gives 10 zero points and `planning_valid` False;
* per-box future waypoints are not stored (LEAD uses them only for visualisation).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lz4.block
import numpy as np

from lead_stream import codecs, geometry
from lead_stream.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    BIKER_MESHES,
    DEPTH_HEIGHT_PX,
    DEPTH_MAX_M,
    DEPTH_WIDTH_PX,
    EMERGENCY_MESHES,
    HDMAP_SIZE_PX,
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
    NUM_ROUTE_POINTS,
    NUM_WAYPOINTS,
    PIXELS_PER_M,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
    TP_POP_DISTANCE_M,
    WAYPOINT_SPACING_STEPS,
    BoxClass,
    BoxField,
    SemanticClass,
)
from lead_stream.errors import LeadFormatError

# Bump when preprocessing output changes in a way the source hash of this file would not show
# (e.g. a change in constants.py or geometry.py); part of every pipeline id.
# 2: one `arrays.lz4` container (was one member per array), radar float16, per-variant targets in it.
PREPROCESS_VERSION = 2
# First lz4 pass of the array container in high-compression mode at this level (0 = fast mode). Decoding
# speed does not depend on it; 12 saves ~5% more bytes but costs ~25 ms per variant to build.
LZ4_HC_LEVEL = 4
TARGETS_DECIMALS = 6                                # targets.json floats rounded to 1e-6 (m, rad, m/s)

# --- LEAD label constants (lead/common/constants.py, config_training.py) ---------------------------
BOX_MAX_Z_M = 4.0                                  # boxes with z outside (-4, 4) are dropped (§4.4)
CONSTRUCTION_CONE_HALF_EXTENT_M = (0.1720348298549652, 0.1720348298549652)
TRAFFIC_WARNING_HALF_EXTENT_M = (1.186714768409729, 1.4352929592132568)
STATIC_TYPES_WHITE_LIST = ("static.prop.constructioncone", "static.prop.trafficwarning")
CAR_OPEN_DOOR_EXTRA_WIDTH_M = 1.2
PEDESTRIAN_MIN_LIDAR_POINTS, PEDESTRIAN_MIN_VISIBLE_PIXELS = 5, 15
PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS = 3, 5
VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS = 1, 1
WALKER_BEV_SCALE = 2.5                              # scale_pedestrian_bev_semantic_size
WALKER_BEV_MIN_HALF_EXTENT_M = 0.4                  # pedestrian_bev_min_extent
OBSTACLE_SCENARIOS = ("Accident", "AccidentTwoWays", "BlockedIntersection", "ParkedObstacle",
                      "ParkedObstacleTwoWays")
PARKING_SCENARIOS = ("ParkingCrossingPedestrian", "ParkingCutIn", "StaticCutIn", "PedestrianCrossing",
                     "ParkingExit")
ROUTE_FIRST_DISTANCE_M = 2.5                        # smooth_path: first point on the 2.5 m circle
ROUTE_SPACING_M = 1.0
NUM_ROUTE_POINTS_SMOOTHING = 20                     # meta route points fed to smooth_path
PLANNING_MIN_FUTURE_STEPS = NUM_WAYPOINTS * WAYPOINT_SPACING_STEPS + 1   # 41
TP_KEY = str(float(TP_POP_DISTANCE_M))              # "3.25"
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
# inputs
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SensorInputs:
    """The per-variant raw sensors of one frame (normal files or `*_perturbated` files)."""

    rgb_jpeg: bytes                   # original JPEG file bytes, 384 x 1152 x 3
    semantics: np.ndarray             # (384, 1152) uint8, SemanticClass 0..9
    depth_m: np.ndarray               # (96, 288) float32 metres
    hdmap: np.ndarray                 # (256, 256) uint8 ChauffeurNet ids 0..8
    radar: dict[str, np.ndarray]      # radar1..radar4 -> (n, 4) [x, y, z, v] in this variant's ego frame


@dataclass(frozen=True, kw_only=True)
class FrameInputs:
    """Everything one sample is built from; geometry shared by both variants is in the true ego frame."""

    route_id: str                     # "<Scenario>/<route_dir>"
    frame_idx: int
    meta: dict[str, Any]              # metas/NNNN.pkl
    boxes: list[dict[str, Any]]       # bboxes/NNNN.pkl
    lidar: np.ndarray                 # (N, 4) float32 [x, y, z, time], true ego frame
    normal: SensorInputs
    perturbated: SensorInputs
    route_dir: Path = field(default=Path("."))  # only used to name files in error messages


def load_frame(route: Any, frame_idx: int) -> FrameInputs:
    """Read every raw file of one frame through a `sources.Route`.

    Raises:
        LeadFormatError: a file is missing or unreadable (raised by `sources`).
    """

    def sensors(perturbated: bool) -> SensorInputs:
        return SensorInputs(
            rgb_jpeg=route.rgb_jpeg(frame_idx, perturbated=perturbated),
            semantics=route.semantics(frame_idx, perturbated=perturbated),
            depth_m=route.depth_m(frame_idx, perturbated=perturbated),
            hdmap=route.hdmap(frame_idx, perturbated=perturbated),
            radar=route.radar(frame_idx, perturbated=perturbated),
        )

    return FrameInputs(
        route_id=route.route_id, frame_idx=frame_idx, meta=route.meta(frame_idx),
        boxes=route.boxes(frame_idx), lidar=route.lidar(frame_idx), normal=sensors(False),
        perturbated=sensors(True), route_dir=Path(route.path),
    )


def _file(inputs: FrameInputs, modality: str, perturbated: bool = False) -> Path:
    from lead_stream.layout import modality_path

    return modality_path(inputs.route_dir, modality, inputs.frame_idx, perturbated=perturbated)


def _check_array(inputs: FrameInputs, modality: str, perturbated: bool, array: np.ndarray,
                 shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise LeadFormatError(_file(inputs, modality, perturbated),
                              f"expected shape {shape}, found {array.shape}")


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


def box_labels(boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float,
               rotation_deg: float) -> np.ndarray:
    """LEAD's `get_bbox_labels` (§4.4) without padding: filtered boxes in BEV pixel coordinates.

    Args:
        boxes: bboxes/NNNN.pkl dicts (true ego frame, sorted by distance).
        meta: the frame's meta (scenario type, scenario_obstacles_ids, door flags).
        translation_m, rotation_deg: the variant's perturbation (0, 0 for the normal variant).

    Returns:
        (n, 9) float32 BoxField columns, n <= 90; X/Y/W/H in BEV pixels, YAW radians, VELOCITY m/s.
    """
    scenario_type = scenario_type_of(meta)
    obstacle_ids = set(meta.get("scenario_obstacles_ids") or [])
    rows: list[np.ndarray] = []
    for box in boxes:
        cls = box["class"]
        if cls == "ego_car":
            continue
        position = box["position"]
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
        if len(rows) == MAX_NUM_BBOXES:
            break
    if not rows:
        return np.zeros((0, NUM_BOX_FIELDS), dtype=np.float32)
    return np.stack(rows).astype(np.float32)


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


def bev_occupancy(boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float,
                  rotation_deg: float) -> np.ndarray:
    """Simplified LEAD `build_bev_occupancy` on the 320 x 384 BEV grid (no convex hulls; see module doc).

    Returns:
        (320, 384) uint8 occupancy classes 0..9 (0 = free), later boxes drawn over earlier ones.
    """
    scenario_type = scenario_type_of(meta)
    obstacle_ids = set(meta.get("scenario_obstacles_ids") or [])
    polygons: list[tuple[np.ndarray, int]] = []
    for box in boxes:
        cls = box["class"]
        if cls not in ("car", "walker", "static", "static_prop_car", "traffic_light"):
            continue
        label = _occupancy_label(box, meta, scenario_type, obstacle_ids)
        if label is None:
            continue
        num_points = box.get("num_points", -1)
        visible = box.get("visible_pixels", -1)
        thresholds = {"walker": (PEDESTRIAN_MIN_LIDAR_POINTS, PEDESTRIAN_MIN_VISIBLE_PIXELS),
                      "car": (VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS),
                      "static": (PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS),
                      "static_prop_car": (PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS)}.get(cls)
        if (thresholds is not None and num_points is not None and visible is not None
                and 0 <= num_points < thresholds[0] and 0 <= visible < thresholds[1]):
            continue
        type_id = box.get("type_id") or ""
        walker_like = cls == "walker" or type_id in BIKER_MESHES
        scale, min_extent = (WALKER_BEV_SCALE, WALKER_BEV_MIN_HALF_EXTENT_M) if walker_like else (1.0, 0.0)
        center = geometry.perturb_points(np.array([box["position"][:2]], dtype=np.float64),
                                         translation_m, rotation_deg)[0]
        yaw = geometry.wrap_angle(float(box["yaw"]) - math.radians(rotation_deg))
        extent_x = max(float(box["extent"][0]), min_extent)
        extent_y = max(float(box["extent"][1]), min_extent)
        if (cls == "car" and "scenario" in (box.get("role_name") or "") and box["speed"] < 0.1
                and box.get("id") in obstacle_ids and scenario_type == "VehicleOpensDoorTwoWays"
                and meta.get("vehicle_opened_door", False)):
            extent_y += CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2
            center[1] += CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2 * (1 if _door_side(meta) == "left" else -1)
        mesh_path = box.get("mesh_path")
        if "mesh_path" in box:
            if mesh_path in MESH_HALF_EXTENTS_M:
                extent_x, extent_y = MESH_HALF_EXTENTS_M[mesh_path]
        elif type_id == "static.prop.trafficwarning":
            extent_x, extent_y = TRAFFIC_WARNING_HALF_EXTENT_M
        elif type_id == "static.prop.constructioncone":
            extent_x, extent_y = CONSTRUCTION_CONE_HALF_EXTENT_M
        corners = geometry.box_corners(center, (extent_x * scale, extent_y * scale), yaw)
        if not (geometry.in_bev(corners).any() or geometry.in_bev(center[None]).any()):
            continue
        polygons.append((geometry.metres_to_bev_px(corners), label))
    return geometry.fill_polygons((BEV_HEIGHT_PX, BEV_WIDTH_PX), polygons)


def hdmap_to_bev(hdmap: np.ndarray) -> np.ndarray:
    """ChauffeurNet hdmap (256, 256) → BEV classes 0..3: rows 48:208, cols 64:256, upsampled x2 (nearest).

    Returns:
        (320, 384) uint8.

    Raises:
        ValueError: an id outside 0..8.
    """
    if hdmap.size and int(hdmap.max()) >= len(_HDMAP_LUT):
        raise ValueError(f"hdmap ids must be 0..{len(_HDMAP_LUT) - 1}, found {int(hdmap.max())}")
    crop = _HDMAP_LUT[hdmap[48:208, 64:256]]
    return np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)


def merge_bev_semantic(hdmap_bev: np.ndarray, occupancy: np.ndarray) -> np.ndarray:
    """LEAD §4.1 step 10: bev_semantic = hdmap where occupancy == 0 else occupancy + 3, uint8 0..12."""
    return np.where(occupancy == 0, hdmap_bev, occupancy + OCCUPANCY_TO_BEV_OFFSET).astype(np.uint8)


def depth_to_u8(depth_m: np.ndarray) -> np.ndarray:
    """Metres → uint8 with metres = v / 255 * 50 (clipped at 50 m, rounded)."""
    return np.round(np.clip(depth_m.astype(np.float64), 0.0,
                            DEPTH_MAX_M) / DEPTH_MAX_M * 255.0).astype(np.uint8)


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
    return np.concatenate(parts, axis=0).astype(np.float16)


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


def _circle_line_hits(center: np.ndarray, radius: float, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Intersections of the circle (center, radius) with the full line through a and b."""
    d = b - a
    f = a - center
    qa = float(d @ d)
    if qa < 1e-18:
        return []
    qb = 2.0 * float(f @ d)
    qc = float(f @ f) - radius * radius
    disc = qb * qb - 4.0 * qa * qc
    if disc < 0:
        return []
    root = math.sqrt(disc)
    return [a + d * ((-qb - root) / (2 * qa)), a + d * ((-qb + root) / (2 * qa))]


def smooth_route(route_xy: np.ndarray, *, num_points: int = NUM_ROUTE_POINTS) -> np.ndarray:
    """LEAD's `smooth_path` semantics: dedupe, first point on the 2.5 m circle, then 1 m steps, extrapolate.

    Each step advances one input point: the next output is `ROUTE_SPACING_M` from the last output on the line
    towards the next input point (the ray direction chosen by the input segment's direction); past the end,
    the line through the last two input points is followed.

    Args:
        route_xy: (N, 2) ego-frame route points (already perturbated), N >= 2 distinct points.

    Returns:
        (num_points, 2) float64.

    Raises:
        ValueError: fewer than 2 distinct points, or a step without an intersection.
    """
    route_xy = np.asarray(route_xy, dtype=np.float64).reshape(-1, 2)
    _, first_idx = np.unique(route_xy, axis=0, return_index=True)
    points = route_xy[np.sort(first_idx)]
    if len(points) < 2:
        raise ValueError(f"route needs >= 2 distinct points, found {len(points)}")
    out: list[np.ndarray] = []
    last = np.zeros(2)
    previous_input = np.zeros(2)
    for step in range(num_points):
        radius = ROUTE_FIRST_DISTANCE_M if step == 0 else ROUTE_SPACING_M
        if step < len(points):
            current = points[step]
            if step > 0:
                previous_input = points[step - 1]
            hits = _circle_line_hits(last, radius, last, current)
            if not hits:  # the input point coincides with the last output: follow the input segment instead
                hits = _circle_line_hits(last, radius, previous_input, current)
        else:
            previous_input, current = points[-2], points[-1]
            hits = _circle_line_hits(last, radius, previous_input, current)
        if not hits:
            raise ValueError(f"route step {step}: no point {radius} m from {last.tolist()}")
        direction = current - previous_input
        last = max(hits, key=lambda p: float(p @ direction)) if len(hits) > 1 else hits[0]
        out.append(last)
    return np.stack(out)


def _pad_rows(array: np.ndarray, length: int) -> np.ndarray:
    """Repeat the last row (zeros if empty) up to `length` rows."""
    if len(array) >= length:
        return array[:length]
    fill = array[-1:] if len(array) else np.zeros((1,) + array.shape[1:], dtype=array.dtype)
    return np.concatenate([array, np.repeat(fill, length - len(array), axis=0)], axis=0)


def target_point_list(meta: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """LEAD §4.1 step 7: world target points of `next_target_points_3.25` → ego frame, duplicates merged.

    Returns:
        ((L, 2) float64 ego-frame points, their L RoadOption commands), L >= 2.

    Raises:
        KeyError: a required meta key is missing.  ValueError: fewer than 2 target points.
    """
    points = [np.asarray(p, dtype=np.float64)[:2] for p in meta[f"next_target_points_{TP_KEY}"]]
    commands = [int(c) for c in meta[f"next_commands_{TP_KEY}"]]
    if len(points) < 2:
        raise ValueError(f"next_target_points_{TP_KEY} needs >= 2 points, found {len(points)}")
    kept_points: list[np.ndarray] = []
    kept_commands: list[int] = []
    for point, command in zip(points, commands, strict=False):
        if len(points) == 2 or not kept_points or not np.allclose(point, kept_points[-1]):
            kept_points.append(point)
            kept_commands.append(command)
    if len(kept_points) < 2:
        raise ValueError(f"next_target_points_{TP_KEY}: fewer than 2 distinct points after merging")
    ego = world_to_ego_meta(np.stack(kept_points), meta)
    return ego, kept_commands


def world_to_ego_meta(points_xy: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """World (x, y) → true ego frame with the meta's pos_global and theta."""
    return geometry.world_to_ego(points_xy, np.asarray(meta["pos_global"], dtype=np.float64)[:2],
                                 float(meta["theta"]))


def _finite(value: Any, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, found {value}")
    return round(value, TARGETS_DECIMALS)


def planning_targets(meta: dict[str, Any], *, translation_m: float, rotation_deg: float,
                     target_points: np.ndarray) -> tuple[dict[str, Any], bool]:
    """Per-variant navigation and planning labels (LEAD §4.1 steps 5 and 7) as JSON-ready lists.

    Args:
        meta: the frame's meta.
        translation_m, rotation_deg: the variant's perturbation.
        target_points: (L, 2) merged target points in the TRUE ego frame (`target_point_list`).

    Returns:
        (dict with target_point, target_point_previous, target_point_next, future_waypoints (8, 2),
        future_yaws_rad (8,), route (10, 2); route_ok: the route could be resampled).
    """
    tps = geometry.perturb_points(target_points, translation_m, rotation_deg)
    previous, current = tps[0], tps[1]
    following = tps[2] if len(tps) > 2 else tps[1]
    future_positions = np.asarray(meta.get("future_positions", np.zeros((0, 3))), dtype=np.float64)
    future_positions = future_positions.reshape(len(future_positions), -1)
    future_yaws = np.asarray(meta.get("future_yaws", np.zeros(0)), dtype=np.float64).reshape(-1)
    steps = [WAYPOINT_SPACING_STEPS * (i + 1) for i in range(NUM_WAYPOINTS)]
    waypoints = future_positions[[k for k in steps if k < len(future_positions)], :2]
    yaws = future_yaws[[k for k in steps if k < len(future_yaws)]]
    waypoints = _pad_rows(geometry.perturb_points(waypoints.reshape(-1, 2), translation_m, rotation_deg),
                          NUM_WAYPOINTS)
    yaws = _pad_rows(geometry.perturb_yaws(yaws, rotation_deg), NUM_WAYPOINTS)
    route_ok = True
    raw_route = meta.get("route")
    try:
        if raw_route is None:
            raise ValueError("no route")
        route_in = np.asarray(raw_route, dtype=np.float64).reshape(-1, 2)[:NUM_ROUTE_POINTS_SMOOTHING]
        route = smooth_route(geometry.perturb_points(route_in, translation_m, rotation_deg))
    except ValueError:
        route_ok = False
        route = np.zeros((NUM_ROUTE_POINTS, 2))
    if not (np.isfinite(waypoints).all() and np.isfinite(yaws).all() and np.isfinite(route).all()
            and np.isfinite(tps).all()):
        raise ValueError("non-finite planning label (future_positions, future_yaws, route or target points)")
    def rounded(array: np.ndarray) -> list:
        return np.round(array, TARGETS_DECIMALS).tolist()

    return {
        "target_point": rounded(current),
        "target_point_previous": rounded(previous),
        "target_point_next": rounded(following),
        "future_waypoints": rounded(waypoints),
        "future_yaws_rad": rounded(yaws),
        "route": rounded(route),
    }, route_ok


def sample_targets(meta: dict[str, Any]) -> dict[str, Any]:
    """The `targets.json` content: ego scalars, commands and both variants' navigation/planning labels."""
    translation_m = _finite(meta["perturbation_translation"], "perturbation_translation")
    rotation_deg = _finite(meta["perturbation_rotation"], "perturbation_rotation")
    target_points, commands = target_point_list(meta)
    normal, route_ok = planning_targets(meta, translation_m=0.0, rotation_deg=0.0,
                                        target_points=target_points)
    perturbated, _ = planning_targets(meta, translation_m=translation_m, rotation_deg=rotation_deg,
                                      target_points=target_points)
    future_steps = len(np.asarray(meta.get("future_positions", [])))
    return {
        "speed_mps": _finite(meta["speed"], "speed"),
        "target_speed_mps": _finite(meta.get("target_speed", 0.0), "target_speed"),
        "brake": bool(meta.get("brake", False)),
        "throttle": _finite(meta.get("throttle", 0.0), "throttle"),
        "steer": _finite(meta.get("steer", 0.0), "steer"),
        "command": commands[0],
        "next_command": commands[1],
        "planning_valid": bool(future_steps >= PLANNING_MIN_FUTURE_STEPS and route_ok),
        "perturbation_translation_m": translation_m,
        "perturbation_rotation_deg": rotation_deg,
        "normal": normal,
        "perturbated": perturbated,
    }


# ---------------------------------------------------------------------------------------------------
# builders (E11): name = tar member name
# ---------------------------------------------------------------------------------------------------
class Frame:
    """Preprocessing view of one frame; per-variant values used by several members are computed once."""

    def __init__(self, inputs: FrameInputs) -> None:
        self.inputs = inputs
        self._memo: dict[tuple[str, bool], Any] = {}

    def perturbation(self, perturbated: bool) -> tuple[float, float]:
        """(translation_m, rotation_deg) of the variant; (0, 0) for the normal one."""
        if not perturbated:
            return 0.0, 0.0
        meta = self.inputs.meta
        return float(meta["perturbation_translation"]), float(meta["perturbation_rotation"])

    def sensors(self, perturbated: bool) -> SensorInputs:
        return self.inputs.perturbated if perturbated else self.inputs.normal

    def memo(self, name: str, perturbated: bool, compute: Callable[[], Any]) -> Any:
        key = (name, perturbated)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def boxes_px(self, perturbated: bool) -> np.ndarray:
        t, r = self.perturbation(perturbated)
        return self.memo("boxes", perturbated, lambda: box_labels(
            self.inputs.boxes, self.inputs.meta, translation_m=t, rotation_deg=r))


def _rgb(frame: Frame, perturbated: bool) -> bytes:
    payload = frame.sensors(perturbated).rgb_jpeg
    if payload[:2] != b"\xff\xd8":
        raise LeadFormatError(_file(frame.inputs, "rgb", perturbated), "not a JPEG (missing SOI marker)")
    return payload


def _lidar_bev(frame: Frame, perturbated: bool) -> np.ndarray:
    lidar = np.asarray(frame.inputs.lidar)
    if lidar.ndim != 2 or lidar.shape[1] < 3:
        raise LeadFormatError(_file(frame.inputs, "lidar"), f"expected (N, >=3) points, found {lidar.shape}")
    t, r = frame.perturbation(perturbated)
    return geometry.rasterize_lidar(geometry.perturb_points(lidar[:, :3], t, r))


def _semantic(frame: Frame, perturbated: bool) -> np.ndarray:
    semantics = np.asarray(frame.sensors(perturbated).semantics)
    _check_array(frame.inputs, "semantics", perturbated, semantics, (RGB_HEIGHT_PX, RGB_WIDTH_PX))
    return semantics.astype(np.uint8, copy=False)


def _depth(frame: Frame, perturbated: bool) -> np.ndarray:
    depth = np.asarray(frame.sensors(perturbated).depth_m)
    _check_array(frame.inputs, "depth", perturbated, depth, (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX))
    return depth_to_u8(depth)


def _bev_semantic(frame: Frame, perturbated: bool) -> np.ndarray:
    hdmap = np.asarray(frame.sensors(perturbated).hdmap)
    _check_array(frame.inputs, "hdmap", perturbated, hdmap, (HDMAP_SIZE_PX, HDMAP_SIZE_PX))
    try:
        hdmap_bev = hdmap_to_bev(hdmap)
    except ValueError as error:
        raise LeadFormatError(_file(frame.inputs, "hdmap", perturbated), str(error)) from None
    t, r = frame.perturbation(perturbated)
    occupancy = bev_occupancy(frame.inputs.boxes, frame.inputs.meta, translation_m=t, rotation_deg=r)
    return merge_bev_semantic(hdmap_bev, occupancy)


def _boxes(frame: Frame, perturbated: bool) -> np.ndarray:
    return frame.boxes_px(perturbated)


def _radar(frame: Frame, perturbated: bool) -> np.ndarray:
    radar = frame.sensors(perturbated).radar
    missing = [f"radar{i + 1}" for i in range(NUM_RADAR_SENSORS) if f"radar{i + 1}" not in radar]
    if missing:
        raise LeadFormatError(_file(frame.inputs, "radar", perturbated), f"missing arrays {missing}")
    return radar_points(radar)


def _radar_detections(frame: Frame, perturbated: bool) -> np.ndarray:
    return radar_detection_labels(frame.boxes_px(perturbated))


def _frame_targets(frame: Frame) -> dict[str, Any]:
    """`sample_targets` of the frame, computed once for both variants and targets.json."""
    def compute() -> dict[str, Any]:
        try:
            return sample_targets(frame.inputs.meta)
        except ValueError as error:
            raise LeadFormatError(_file(frame.inputs, "metas"), str(error)) from None

    return frame.memo("targets", False, compute)


def _targets(frame: Frame, perturbated: bool) -> dict[str, Any]:
    """targets.json: the variant-independent part of `sample_targets` (no per-variant geometry)."""
    return {name: value for name, value in _frame_targets(frame).items() if name not in ("normal", "perturbated")}


def _planning(name: str) -> Callable[[Frame, bool], np.ndarray]:
    def compute(frame: Frame, perturbated: bool) -> np.ndarray:
        geo = _frame_targets(frame)["perturbated" if perturbated else "normal"]
        return np.asarray(geo[name], dtype=np.float32)

    return compute


@dataclass(frozen=True)
class ArraySpec:
    """One array of a variant's `arrays[_pert].lz4` container."""

    name: str                                       # array name inside the container
    compute: Callable[[Frame, bool], np.ndarray]    # (frame, perturbated) -> array
    filter: str = "none"                            # codecs filter: none | transpose | nibble
    source: str = "metas"                           # raw file named when a key is missing


# Shapes / dtypes (n = rows actually present, never padded):
ARRAY_SPECS: tuple[ArraySpec, ...] = (
    ArraySpec("lidar_bev", _lidar_bev, "nibble", "lidar"),        # (320, 384) uint8 counts 0..5 (loader / 5)
    ArraySpec("semantic", _semantic, "nibble", "semantics"),       # (384, 1152) uint8 SemanticClass 0..9
    ArraySpec("depth", _depth, "transpose", "depth"),              # (96, 288) uint8, metres = v / 255 * 50
    ArraySpec("bev_semantic", _bev_semantic, "nibble", "bboxes"),  # (320, 384) uint8 BevSemanticClass 0..12
    ArraySpec("boxes", _boxes, "none", "bboxes"),                  # (n, 9) float32 BoxField, BEV px, n <= 90
    ArraySpec("radar", _radar, "transpose+shuffle", "radar"),      # (n, 5) float16 [x, y, z, v, sensor 0..3]
    ArraySpec("radar_detections", _radar_detections, "none", "bboxes"),  # (20, 4) float32 [x, y, v, valid]
    ArraySpec("target_point", _planning("target_point"), "none"),                    # (2,) float32 m
    ArraySpec("target_point_previous", _planning("target_point_previous"), "none"),  # (2,) float32 m
    ArraySpec("target_point_next", _planning("target_point_next"), "none"),          # (2,) float32 m
    ArraySpec("future_waypoints", _planning("future_waypoints"), "none"),            # (8, 2) float32 m
    ArraySpec("future_yaws_rad", _planning("future_yaws_rad"), "none"),              # (8,) float32 rad
    ArraySpec("route", _planning("route"), "none"),                                  # (10, 2) float32 m
)
ARRAY_NAMES: tuple[str, ...] = tuple(spec.name for spec in ARRAY_SPECS)
ARRAY_FILTERS: dict[str, str] = {spec.name: spec.filter for spec in ARRAY_SPECS if spec.filter != "none"}
VARIANTS = ("normal", "perturbated")  # group names in arrays.lz4


def variant_arrays(frame: Frame, perturbated: bool) -> dict[str, np.ndarray]:
    """Every container array of one variant, in `ARRAY_SPECS` order.

    Raises:
        LeadFormatError: a raw file lacks a key the array needs (names the file).
    """
    out = {}
    for spec in ARRAY_SPECS:
        try:
            out[spec.name] = spec.compute(frame, perturbated)
        except KeyError as error:
            raise LeadFormatError(_file(frame.inputs, spec.source, perturbated),
                                  f"missing key {error} (needed for {spec.name})") from None
    return out


def sample_arrays(frame: Frame, perturbated: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """The arrays.lz4 content: {"normal": variant_arrays(normal), "perturbated": variant_arrays(perturbated)}."""
    return {variant: variant_arrays(frame, variant == "perturbated") for variant in VARIANTS}


def encode_json(value: dict[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces) so equal content gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class MemberBuilder:
    """One sample member: `compute(frame)` gives the value, `build(frame)` its encoded bytes."""

    name: str                                        # tar member name, e.g. "rgb_pert.jpg"
    compute_variant: Callable[[Frame, bool], Any]    # (frame, perturbated) -> bytes | dict
    perturbated: bool = False                        # which sensor variant the member holds (jpg only)

    @property
    def kind(self) -> str:
        """Codec from the last extension: jpg, lz4, npy or json."""
        return codecs.codec_of(self.name)

    def compute(self, frame: Frame) -> Any:
        """The decoded value of this member (what `decode_member` returns for its bytes)."""
        return self.compute_variant(frame, self.perturbated)

    def build(self, frame: Frame) -> bytes:
        """Encoded member bytes."""
        return encode_member(self.name, self.compute(frame))


def _both(stem: str, ext: str, compute: Callable[[Frame, bool], Any]) -> tuple[MemberBuilder, MemberBuilder]:
    return MemberBuilder(f"{stem}.{ext}", compute, False), MemberBuilder(f"{stem}_pert.{ext}", compute, True)


MEMBERS: tuple[MemberBuilder, ...] = tuple(sorted(
    _both("rgb", "jpg", _rgb)
    + (MemberBuilder("arrays.lz4", sample_arrays),)
    + (MemberBuilder("targets.json", _targets),),
    key=lambda m: m.name,
))
MEMBER_NAMES: tuple[str, ...] = tuple(m.name for m in MEMBERS)


def encode_lz4_hc(array: np.ndarray, *, level: int = LZ4_HC_LEVEL) -> bytes:
    """`codecs.encode_lz4` with lz4's high-compression block mode (same header and payload format)."""
    if level <= 0:
        return codecs.encode_lz4(array)
    array = np.ascontiguousarray(array)
    dtype = array.dtype.str.encode("ascii")
    header = struct.pack("<4sBB", codecs.LZ4_MAGIC, len(dtype), array.ndim) + dtype
    header += struct.pack(f"<{array.ndim}Q", *array.shape)
    return header + lz4.block.compress(array.tobytes(), mode="high_compression", compression=level,
                                       store_size=True)


def encode_member(name: str, value: Any) -> bytes:
    """Encode a member value by its extension (jpg values are already JPEG bytes and pass through)."""
    kind = codecs.codec_of(name)
    if kind == "jpg":
        return bytes(value)
    if kind == "json":
        return encode_json(value)
    if kind == "lz4" and isinstance(value, dict):
        return codecs.encode_arrays(value, filters=ARRAY_FILTERS, level=LZ4_HC_LEVEL)
    if kind == "lz4":
        return encode_lz4_hc(value)
    return codecs.encode(kind, value)


def decode_member(name: str, payload: bytes) -> Any:
    """Decode member bytes by extension: jpg → (H, W, 3) uint8, npy → array, json → dict, lz4 → array or,
    for an array container, {array name: array}."""
    kind = codecs.codec_of(name)
    if kind == "json":
        return json.loads(payload)
    return codecs.decode(kind, payload)


def build_sample(inputs: FrameInputs, *, members: tuple[MemberBuilder, ...] = MEMBERS) -> dict[str, bytes]:
    """Build every member of one sample.

    Returns:
        {member name: encoded bytes}, in member-name order.

    Raises:
        LeadFormatError: an input file is malformed (names the file: usually the meta or bboxes pickle).
    """
    frame = Frame(inputs)
    out: dict[str, bytes] = {}
    for member in members:
        try:
            out[member.name] = member.build(frame)
        except KeyError as error:
            raise LeadFormatError(_file(inputs, "metas"),
                                  f"missing key {error} (needed for {member.name})") from None
    return out
