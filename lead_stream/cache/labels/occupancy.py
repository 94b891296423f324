"""Raw LEAD boxes and hdmap of one frame → (320, 384) BEV occupancy and BEV semantics.

LEAD's `build_bev_occupancy` with its per-class labels, walker/biker scaling (x2.5, >= 0.4 m), occlusion
filters and convex hulls (construction sites, scenario obstacles, red/green light groups), and the
hdmap → BEV merge (LEAD_FORMAT §4.1 step 10). Difference from LEAD, on purpose: drawn directly on the
320 x 384 BEV grid with sub-pixel polygon rasterisation instead of cv2's integer corners on a 1024 x 1024
grid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lead_stream.cache.labels.rules import (
    CAR_OPEN_DOOR_EXTRA_WIDTH_M,
    CONSTRUCTION_CONE_HALF_EXTENT_M,
    CONSTRUCTION_SITE_RADIUS_M,
    HULL_GRID_HALF_SIZE_M,
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
    door_side,
    scenario_type_of,
)
from lead_stream.core import geometry
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    BIKER_MESHES,
    EMERGENCY_MESHES,
    HDMAP_TO_BEV_SEMANTIC,
)


class OccupancyClass:
    """LEAD's TransfuserBEVOccupancyClass (bev_semantic = occupancy + 3 where occupied)."""

    VEHICLE, WALKER, OBSTACLE, PARKING_VEHICLE, SPECIAL_VEHICLE, BIKER = 1, 2, 3, 4, 5, 6
    TRAFFIC_GREEN, TRAFFIC_RED_NORMAL, TRAFFIC_RED_NOT_NORMAL = 7, 8, 9


OCCUPANCY_TO_BEV_OFFSET = 3
_HDMAP_LUT = np.array(HDMAP_TO_BEV_SEMANTIC, dtype=np.uint8)


def _occupancy_label(
    box: dict[str, Any], meta: dict[str, Any], scenario_type: str, obstacle_ids: set
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
    if (
        len(obstacles) >= 3
        and (np.linalg.norm(obstacles - obstacles.mean(axis=0), axis=1) <= OBSTACLE_SITE_RADIUS_M).all()
    ):
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


def bev_occupancy(
    boxes: list[dict[str, Any]], meta: dict[str, Any], *, translation_m: float, rotation_deg: float
) -> np.ndarray:
    """LEAD's `build_bev_occupancy` on the 320 x 384 BEV grid, convex hulls included (see module doc).

    The class rules and filters run per box; the geometry (perturbation, corners, BEV test, pixel
    coordinates, fill) runs on all drawn boxes at once, bit-identical to doing it box by box.

    Returns:
        (320, 384) uint8 occupancy classes 0..9 (0 = free), later boxes drawn over earlier ones.
    """
    scenario_type = scenario_type_of(meta)
    obstacle_ids = set(meta.get("scenario_obstacles_ids") or [])
    positions: list[np.ndarray] = []  # (1, 2) float64 true-ego centre per drawn box
    yaws: list[float] = []  # perturbated yaw, radians
    half_extents: list[tuple[float, float]] = []
    door_shifts: list[tuple[int, float]] = []  # (box index, lateral shift added after the perturbation)
    box_labels_: list[int] = []
    drawn_boxes: list[bool] = []  # False: only its corners count (a hull member LEAD does not draw)
    groups: list[str | None] = []  # the corner list (`_hull_group`) of each box
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
        occluded = (
            thresholds is not None
            and num_points is not None
            and visible is not None
            and 0 <= num_points < thresholds[0]
            and 0 <= visible < thresholds[1]
        )
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
        if (
            cls == "car"
            and "scenario" in (box.get("role_name") or "")
            and box["speed"] < 0.1
            and box.get("id") in obstacle_ids
            and scenario_type == "VehicleOpensDoorTwoWays"
            and meta.get("vehicle_opened_door", False)
        ):
            extent_y += CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2
            door_shifts.append(
                (len(positions), CAR_OPEN_DOOR_EXTRA_WIDTH_M / 2 * (1 if door_side(meta) == "left" else -1))
            )
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
    drawn = (
        geometry.in_bev(corners.reshape(-1, 2)).reshape(-1, 4).any(axis=1) | geometry.in_bev(centers)
    ) & np.array(drawn_boxes)
    vertices = geometry.metres_to_bev_px(corners[drawn].reshape(-1, 2)).reshape(-1, 4, 2)
    drawn_labels = [label for label, keep in zip(box_labels_, drawn.tolist(), strict=True) if keep]
    image = geometry.fill_convex((BEV_HEIGHT_PX, BEV_WIDTH_PX), vertices, drawn_labels)
    on_grid = (np.abs(centers) < HULL_GRID_HALF_SIZE_M).all(axis=1)  # LEAD's 1024 px (256 m) grid
    hull_corners: dict[str, list[np.ndarray]] = {
        g: [] for g in ("obstacle", "cone", "warning", "red", "red_other", "green")
    }
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
