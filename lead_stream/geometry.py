"""Ego-frame geometry shared by preprocessing and rendering: perturbation transforms, BEV rasters, cameras.

All functions are pure numpy. Ego frame: x forward, y right, z up (metres). BEV rasters: rows = y,
cols = x, 4 px/m, row 0 / col 0 at (x, y) = (MIN_X_M, MIN_Y_M). The one non-obvious rule: the sensor
perturbation maps a true-ego point p into the perturbated frame with p' = R(r)^T (p - [0, t]) and yaws with
psi' = wrap(psi - r), r given in DEGREES (LEAD_FORMAT §1.6).
"""

from __future__ import annotations

import math

import numpy as np

from lead_stream.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    CAMERA_FOV_DEG,
    CAMERA_HEIGHT_PX,
    CAMERA_POSITIONS_M,
    CAMERA_WIDTH_PX,
    CAMERA_YAWS_DEG,
    LIDAR_HIST_MAX_COUNT,
    MAX_X_M,
    MAX_Y_M,
    MAX_Z_M,
    MIN_X_M,
    MIN_Y_M,
    MIN_Z_M,
    PIXELS_PER_M,
)


def wrap_angle(angle_rad):
    """Wrap radians into [-pi, pi) (LEAD's `normalize_angle`); works on floats and arrays."""
    return (angle_rad + np.pi) % (2 * np.pi) - np.pi


def rotation_2d(yaw_rad: float) -> np.ndarray:
    """(2, 2) float64 rotation R(yaw) = [[cos, -sin], [sin, cos]]."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.array([[c, -s], [s, c]], dtype=np.float64)


def perturb_points(points: np.ndarray, translation_m: float, rotation_deg: float) -> np.ndarray:
    """Map true-ego points into the perturbated frame: p' = R(r)^T (p - [0, t]) on the first two columns.

    Args:
        points: (N, D) array, D >= 2; columns beyond x, y (z, time, ...) are kept unchanged.
        translation_m: lateral shift t of the perturbated rig along +y, metres.
        rotation_deg: yaw r of the perturbated rig, degrees.

    Returns:
        (N, D) float64 copy in the perturbated frame (identity when t = r = 0, still a float64 copy).
    """
    out = np.array(points, dtype=np.float64, copy=True).reshape(len(points), -1)
    if translation_m == 0.0 and rotation_deg == 0.0:
        return out
    xy = out[:, :2] - np.array([0.0, translation_m])
    # row-vector form of R^T @ p: p^T @ R
    out[:, :2] = xy @ rotation_2d(math.radians(rotation_deg))
    return out


def perturb_yaws(yaws_rad: np.ndarray, rotation_deg: float) -> np.ndarray:
    """psi' = wrap(psi - r) as float64 (wrapping applies to the unperturbated variant too, as in LEAD)."""
    return wrap_angle(np.asarray(yaws_rad, dtype=np.float64) - math.radians(rotation_deg))


def world_to_ego(points_xy: np.ndarray, ego_xy: np.ndarray, ego_yaw_rad: float) -> np.ndarray:
    """World points → ego frame: R(theta)^T (p - pos) (LEAD's `inverse_conversion_2d`), (N, 2) float64."""
    delta = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2) - np.asarray(ego_xy, dtype=np.float64)[:2]
    return delta @ rotation_2d(ego_yaw_rad)


def rasterize_lidar(points: np.ndarray) -> np.ndarray:
    """LiDAR points → LEAD's BEV histogram as uint8 counts clipped at 5 (LEAD stores counts / 5 as float).

    Bins: x in [-32, 64] → 384 columns, y in [-40, 40] → 320 rows (0.25 m, left-closed, the last bin also
    holds the upper edge, as `np.histogramdd`); only points with z in [-4, 10] count.

    Args:
        points: (N, >=3) ego-frame points (x, y, z, ...).

    Returns:
        (320, 384) uint8, values 0..5.
    """
    points = np.asarray(points)
    x = points[:, 0].astype(np.float64)
    y = points[:, 1].astype(np.float64)
    z = points[:, 2].astype(np.float64)
    keep = (z >= MIN_Z_M) & (z <= MAX_Z_M) & (x >= MIN_X_M) & (x <= MAX_X_M) & (y >= MIN_Y_M) & (y <= MAX_Y_M)
    cols = np.minimum(np.floor((x[keep] - MIN_X_M) * PIXELS_PER_M).astype(np.int64), BEV_WIDTH_PX - 1)
    rows = np.minimum(np.floor((y[keep] - MIN_Y_M) * PIXELS_PER_M).astype(np.int64), BEV_HEIGHT_PX - 1)
    counts = np.bincount(rows * BEV_WIDTH_PX + cols, minlength=BEV_HEIGHT_PX * BEV_WIDTH_PX)
    return np.minimum(counts, LIDAR_HIST_MAX_COUNT).astype(np.uint8).reshape(BEV_HEIGHT_PX, BEV_WIDTH_PX)


def box_corners(center_xy: np.ndarray, half_extent_xy: np.ndarray, yaw_rad: float) -> np.ndarray:
    """(4, 2) corners of a rotated rectangle (front-left, front-right, rear-right, rear-left in box frame)."""
    ex, ey = float(half_extent_xy[0]), float(half_extent_xy[1])
    local = np.array([[ex, -ey], [ex, ey], [-ex, ey], [-ex, -ey]], dtype=np.float64)
    return local @ rotation_2d(yaw_rad).T + np.asarray(center_xy, dtype=np.float64)[:2]


def metres_to_bev_px(points_xy: np.ndarray) -> np.ndarray:
    """Ego (x, y) metres → BEV pixel (col, row) as float64 (col = (x+32)*4, row = (y+40)*4)."""
    points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return np.stack([(points_xy[:, 0] - MIN_X_M) * PIXELS_PER_M, (points_xy[:, 1] - MIN_Y_M) * PIXELS_PER_M],
                    1)


def fill_polygons(shape: tuple[int, int], polygons: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Rasterise filled convex polygons in order (later ones overwrite) into a uint8 image.

    A pixel (row, col) is covered when its centre (col + 0.5, row + 0.5) lies inside the polygon (edges
    included), so a rectangle from x0 to x1 covers exactly the pixels whose centres fall in [x0, x1].

    Args:
        shape: (rows, cols) of the output.
        polygons: list of ((K, 2) convex vertices as continuous (col, row) pixel coordinates, label 1..255).

    Returns:
        (rows, cols) uint8, 0 where no polygon covers a pixel.
    """
    image = np.zeros(shape, dtype=np.uint8)
    for vertices, label in polygons:
        vertices = np.asarray(vertices, dtype=np.float64)
        c0 = max(int(np.floor(vertices[:, 0].min() - 0.5)), 0)
        c1 = min(int(np.ceil(vertices[:, 0].max() + 0.5)), shape[1])
        r0 = max(int(np.floor(vertices[:, 1].min() - 0.5)), 0)
        r1 = min(int(np.ceil(vertices[:, 1].max() + 0.5)), shape[0])
        if c0 >= c1 or r0 >= r1:
            continue
        cols = np.arange(c0, c1) + 0.5
        rows = np.arange(r0, r1)[:, None] + 0.5
        edges = np.roll(vertices, -1, axis=0) - vertices
        # cross product sign of every edge against every pixel centre; inside = all the same sign (or 0)
        cross = [ex * (rows - vy) - ey * (cols - vx)
                 for (vx, vy), (ex, ey) in zip(vertices, edges, strict=True)]
        stack = np.stack(cross)
        inside = (stack >= -1e-9).all(axis=0) | (stack <= 1e-9).all(axis=0)
        image[r0:r1, c0:c1][inside] = label
    return image


def in_bev(points_xy: np.ndarray) -> np.ndarray:
    """Mask of points inside the closed BEV box x in [-32, 64], y in [-40, 40]."""
    points_xy = np.asarray(points_xy)
    return ((points_xy[:, 0] >= MIN_X_M) & (points_xy[:, 0] <= MAX_X_M)
            & (points_xy[:, 1] >= MIN_Y_M) & (points_xy[:, 1] <= MAX_Y_M))


def camera_focal_px() -> float:
    """Pinhole focal length in pixels of one 384 x 384, FOV 60 camera."""
    return CAMERA_WIDTH_PX / (2.0 * math.tan(math.radians(CAMERA_FOV_DEG) / 2.0))


def project_to_camera(points_xyz: np.ndarray, camera_idx: int) -> tuple[np.ndarray, np.ndarray]:
    """Project ego-frame points into camera `camera_idx` (0 left, 1 front, 2 right) of the 3-camera rig.

    Args:
        points_xyz: (N, 3) ego-frame points (ground at z = 0; cameras 2.25 m above it).
        camera_idx: index into CAMERA_YAWS_DEG / CAMERA_POSITIONS_M.

    Returns:
        ((N, 2) float64 pixel (u, v) inside that camera's own 384 x 384 image, (N,) bool in front of it).
    """
    points_xyz = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    delta = points_xyz - np.asarray(CAMERA_POSITIONS_M[camera_idx], dtype=np.float64)
    yaw = math.radians(CAMERA_YAWS_DEG[camera_idx])
    forward = math.cos(yaw) * delta[:, 0] + math.sin(yaw) * delta[:, 1]
    right = -math.sin(yaw) * delta[:, 0] + math.cos(yaw) * delta[:, 1]
    up = delta[:, 2]
    in_front = forward > 0.1
    depth = np.where(in_front, forward, 1.0)
    f = camera_focal_px()
    u = CAMERA_WIDTH_PX / 2.0 + f * right / depth
    v = CAMERA_HEIGHT_PX / 2.0 - f * up / depth
    return np.stack([u, v], axis=1), in_front
