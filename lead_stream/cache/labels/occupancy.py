"""Raw LEAD boxes and hdmap of one frame → (320, 384) BEV occupancy and BEV semantics, as LEAD's cache has them.

LEAD's `build_bev_occupancy` with its per-class labels, walker/biker scaling (x2.5, >= 0.4 m), occlusion
filters and convex hulls (construction sites, scenario obstacles, red/green light groups), drawn as LEAD
draws them: integer corners on its 1024 x 1024 grid (4 px/m), filled with OpenCV's rules (`raster`, boundary
pixels included), then cropped to the BEV (rows 352:672, columns 384:768); and the hdmap → BEV merge
(LEAD_FORMAT §4.1 step 10).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lead_stream.cache.labels import raster
from lead_stream.cache.labels.rules import (
    CAR_OPEN_DOOR_EXTRA_WIDTH_M,
    CONSTRUCTION_CONE_HALF_EXTENT_M,
    CONSTRUCTION_SITE_RADIUS_M,
    MESH_HALF_EXTENTS_M,
    OBSTACLE_SCENARIOS,
    OBSTACLE_SITE_RADIUS_M,
    PARKING_MIN_LIDAR_POINTS,
    PARKING_MIN_VISIBLE_PIXELS,
    PARKING_SCENARIOS,
    PEDESTRIAN_MIN_LIDAR_POINTS,
    PEDESTRIAN_MIN_VISIBLE_PIXELS,
    STATIC_TYPES_WHITE_LIST,
    TRAFFIC_WARNING_HALF_EXTENT_M,
    VEHICLE_MIN_LIDAR_POINTS,
    VEHICLE_MIN_VISIBLE_PIXELS,
    WALKER_BEV_MIN_HALF_EXTENT_M,
    WALKER_BEV_SCALE,
    biker_meshes,
    door_opens_left,
    scenario_type_of,
)
from lead_stream.core import geometry
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    EMERGENCY_MESHES,
    HDMAP_TO_BEV_SEMANTIC,
    MIN_X_M,
    MIN_Y_M,
)


class OccupancyClass:
    """LEAD's TransfuserBEVOccupancyClass (bev_semantic = occupancy + 3 where occupied)."""

    VEHICLE, WALKER, OBSTACLE, PARKING_VEHICLE, SPECIAL_VEHICLE, BIKER = 1, 2, 3, 4, 5, 6
    TRAFFIC_GREEN, TRAFFIC_RED_NORMAL, TRAFFIC_RED_NOT_NORMAL = 7, 8, 9


OCCUPANCY_TO_BEV_OFFSET = 3
_HDMAP_LUT = np.array(HDMAP_TO_BEV_SEMANTIC, dtype=np.uint8)


def _occupancy_label(
    box: dict[str, Any], meta: dict[str, Any], scenario_type: str, obstacle_ids: set, bikers: frozenset[str]
) -> int | None:
    """LEAD's build_bev_occupancy class rules for one box; None = not drawn."""
    cls = box["class"]
    type_id = box.get("type_id") or ""
    scenario_stopped = "scenario" in (box.get("role_name") or "") and cls == "car" and box["speed"] < 0.1
    is_obstacle_actor = box.get("id") in obstacle_ids
    if cls == "car":
        if type_id in EMERGENCY_MESHES:
            if scenario_type in OBSTACLE_SCENARIOS and is_obstacle_actor:
                return OccupancyClass.OBSTACLE
            return OccupancyClass.SPECIAL_VEHICLE
        if type_id in bikers:
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


def _hull_group(
    box: dict[str, Any], meta: dict[str, Any], scenario_type: str, obstacle_ids: set, label: int
) -> str | None:
    """Which of LEAD's corner lists (`build_bev_occupancy`) a drawn box's corners join, if any."""
    cls = box["class"]
    type_id = box.get("type_id") or ""
    if cls == "car":
        stopped = "scenario" in (box.get("role_name") or "") and box["speed"] < 0.1
        if label == OccupancyClass.OBSTACLE and (type_id in EMERGENCY_MESHES or stopped):
            return "obstacle"  # accident / parked-obstacle actors, a vehicle with its door open
        return None
    if cls == "static":
        if type_id == "static.prop.constructioncone":
            return "cone"
        if type_id == "static.prop.trafficwarning":
            return "warning"
        return "obstacle" if label == OccupancyClass.SPECIAL_VEHICLE else None
    if cls == "traffic_light":
        return {
            OccupancyClass.TRAFFIC_RED_NORMAL: "red",
            OccupancyClass.TRAFFIC_RED_NOT_NORMAL: "red_other",
            OccupancyClass.TRAFFIC_GREEN: "green",
        }.get(label)
    return None


def _fill_hulls(window: np.ndarray, corners: dict[str, list[np.ndarray]]) -> None:
    """LEAD's convex hulls over groups of box corners (integer grid pixels), drawn after the boxes
    (`build_bev_occupancy`): a construction site (>= 3 warning corners and >= 24 cone corners, all within
    24 m of their mean), scenario obstacles (>= 3 corners within 48 m), and the red (else green) traffic
    lights that affect the ego."""

    def stacked(*groups: str) -> np.ndarray:
        parts = [c for group in groups for c in corners[group]]
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)

    def fill(points: np.ndarray, label: int) -> None:
        raster.fill_poly(window, CROP_ORIGIN_PX, raster.convex_hull(points), label)

    def compact(points: np.ndarray, radius_m: float) -> bool:
        return bool((np.linalg.norm(points - points.mean(axis=0), axis=1) <= radius_m * GRID_PX_PER_M).all())

    cones, warnings_ = stacked("cone"), stacked("warning")
    if len(warnings_) >= 3 and len(cones) >= 24:
        site = np.concatenate([cones, warnings_])
        if compact(site, CONSTRUCTION_SITE_RADIUS_M):
            fill(site, OccupancyClass.OBSTACLE)
    obstacles = stacked("obstacle")
    if len(obstacles) >= 3 and compact(obstacles, OBSTACLE_SITE_RADIUS_M):
        fill(obstacles, OccupancyClass.OBSTACLE)
    for group, label in (
        ("red_other", OccupancyClass.TRAFFIC_RED_NOT_NORMAL),
        ("red", OccupancyClass.TRAFFIC_RED_NORMAL),
        ("green", OccupancyClass.TRAFFIC_GREEN),
    ):
        if len(stacked(group)) >= 3:
            fill(stacked(group), label)
            break


_OCCUPANCY_THRESHOLDS = {
    "walker": (PEDESTRIAN_MIN_LIDAR_POINTS, PEDESTRIAN_MIN_VISIBLE_PIXELS),
    "car": (VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS),
    "static": (PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS),
    "static_prop_car": (PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS),
}
_DRAWN_CLASSES = ("car", "walker", "static", "static_prop_car", "traffic_light")
# LEAD draws on a 1024 x 1024 grid at 4 px/m around the ego (pixel 512) and crops the BEV from it
GRID_PX_PER_M = 4
GRID_SIZE_PX = 1024
GRID_HALF_SIZE_M = GRID_SIZE_PX / GRID_PX_PER_M / 2  # 128 m
CROP_ORIGIN_PX = (
    int(GRID_SIZE_PX / 2 + MIN_Y_M * GRID_PX_PER_M),  # row 352 (y = -40 m)
    int(GRID_SIZE_PX / 2 + MIN_X_M * GRID_PX_PER_M),  # column 384 (x = -32 m)
)


def _occluded(box: dict[str, Any]) -> bool:
    """LEAD's occupancy occlusion rule: known LiDAR points and visible pixels both below the class's minimum."""
    thresholds = _OCCUPANCY_THRESHOLDS.get(box["class"])
    if thresholds is None:
        return False
    num_points, visible = box.get("num_points", -1), box.get("visible_pixels", -1)
    if num_points is None or visible is None:
        return False
    return 0 <= num_points < thresholds[0] and 0 <= visible < thresholds[1]


def bev_occupancy(
    boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float, rotation_deg: float
) -> np.ndarray:
    """LEAD's `build_bev_occupancy` + crop, pixel for pixel (see module doc).

    Per box in order: move its centre into the variant's frame (LEAD's 2 x 2 matmul), skip it if the centre
    leaves the 1024-px grid, take integer corners from `cv2.boxPoints` of the (scaled) extents and yaw, pick
    its class, add its corners to a hull group, skip it if occluded, fill it; then the hulls. Motorcycles
    are bikers only for legacy metas (`biker_meshes`).

    Returns:
        (320, 384) uint8 occupancy classes 0..9 (0 = free), later boxes drawn over earlier ones.
    """
    scenario_type = scenario_type_of(meta)
    obstacle_ids = set(meta.get("scenario_obstacles_ids") or [])
    bikers = biker_meshes(meta)
    window = np.zeros((BEV_HEIGHT_PX, BEV_WIDTH_PX), dtype=np.uint8)
    yaw_rad = np.deg2rad(rotation_deg)
    rotation = np.array([[np.cos(yaw_rad), -np.sin(yaw_rad)], [np.sin(yaw_rad), np.cos(yaw_rad)]])
    translation = np.array([[0.0], [translation_m]])
    corners: dict[str, list[np.ndarray]] = {
        g: [] for g in ("obstacle", "cone", "warning", "red", "red_other", "green")
    }
    drawn: list[np.ndarray] = []  # corners of the boxes filled, in LEAD's order (later over earlier)
    drawn_labels: list[int] = []
    for box in boxes:
        cls = box["class"]
        if cls not in _DRAWN_CLASSES:
            continue
        type_id = box.get("type_id") or ""
        walker_like = cls == "walker" or type_id in bikers
        scale, min_extent = (WALKER_BEV_SCALE, WALKER_BEV_MIN_HALF_EXTENT_M) if walker_like else (1.0, 0.0)
        position = rotation.T @ (np.array([[box["position"][0]], [box["position"][1]]]) - translation)
        x, y = position[:, 0]
        cx = (x + GRID_HALF_SIZE_M) * GRID_PX_PER_M
        cy = (GRID_HALF_SIZE_M + y) * GRID_PX_PER_M
        if not (0 <= cx < GRID_SIZE_PX and 0 <= cy < GRID_SIZE_PX):
            continue
        yaw = geometry.normalize_angle(box["yaw"] - yaw_rad)
        extent_x = max(box["extent"][0], min_extent)
        extent_y = max(box["extent"][1], min_extent)
        if (
            cls == "car"
            and "scenario" in (box.get("role_name") or "")
            and box["speed"] < 0.1
            and box.get("id") in obstacle_ids
            and scenario_type == "VehicleOpensDoorTwoWays"
            and meta.get("vehicle_opened_door", False)
        ):
            extent_y += CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2
            shift = CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2 * GRID_PX_PER_M
            cy = cy + shift if door_opens_left(meta) else cy - shift
        if "mesh_path" in box:
            if box["mesh_path"] in MESH_HALF_EXTENTS_M:
                extent_x, extent_y = MESH_HALF_EXTENTS_M[box["mesh_path"]]
        elif type_id == "static.prop.trafficwarning":
            extent_x, extent_y = TRAFFIC_WARNING_HALF_EXTENT_M
        elif type_id == "static.prop.constructioncone":
            extent_x, extent_y = CONSTRUCTION_CONE_HALF_EXTENT_M
        points = raster.box_points(
            cx,
            cy,
            extent_x * 2 * GRID_PX_PER_M * scale,
            extent_y * 2 * GRID_PX_PER_M * scale,
            np.rad2deg(yaw),
        )
        label = _occupancy_label(box, meta, scenario_type, obstacle_ids, bikers)
        if label is None:
            continue
        group = _hull_group(box, meta, scenario_type, obstacle_ids, label)
        if group is not None:
            corners[group].append(points)
        if _occluded(box):
            continue
        drawn.append(points)
        drawn_labels.append(label)
    raster.fill_polygons(window, CROP_ORIGIN_PX, drawn, drawn_labels)
    _fill_hulls(window, corners)
    return window


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
