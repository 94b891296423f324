"""Ego-frame geometry shared by preprocessing and rendering: perturbation transforms, BEV rasters, cameras.

All functions are pure numpy. Ego frame: x forward, y right, z up (metres). BEV rasters: rows = y,
cols = x, 4 px/m, row 0 / col 0 at (x, y) = (MIN_X_M, MIN_Y_M). The one non-obvious rule: the sensor
perturbation maps a true-ego point p into the perturbated frame with p' = R(r)^T (p - [0, t]) and yaws with
psi' = wrap(psi - r), r given in DEGREES (LEAD_FORMAT §1.6).
"""

from __future__ import annotations

import math

import numpy as np

from lead_stream.core.constants import (
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


def normalize_angle(angle_rad: float) -> float:
    """LEAD's `normalize_angle` in its own arithmetic: x % 2π, minus 2π when above π (scalars)."""
    x = angle_rad % (2 * np.pi)
    if x > np.pi:
        x -= 2 * np.pi
    return x


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


def perturb_point_rows(points_xy: np.ndarray, translation_m: float, rotation_deg: float) -> np.ndarray:
    """`perturb_points` of each (x, y) row on its own, in one call: row i equals
    `perturb_points(points_xy[i:i + 1], ...)[0]` bit for bit.

    A stacked (N, 1, 2) @ (2, 2) matmul runs each row through the same 1-row BLAS path as a single-point
    call, while an (N, 2) @ (2, 2) matmul may take another kernel (FMA order) and differ in the last bit.

    Args:
        points_xy: (N, 2) true-ego points.

    Returns:
        (N, 2) float64 points in the perturbated frame.
    """
    out = np.array(points_xy, dtype=np.float64, copy=True).reshape(-1, 2)
    if translation_m == 0.0 and rotation_deg == 0.0:
        return out
    xy = (out - np.array([0.0, translation_m]))[:, None, :]
    return (xy @ rotation_2d(math.radians(rotation_deg)))[:, 0, :]


def perturb_yaws(yaws_rad: np.ndarray, rotation_deg: float) -> np.ndarray:
    """psi' = wrap(psi - r) as float64 (wrapping applies to the unperturbated variant too, as in LEAD)."""
    return wrap_angle(np.asarray(yaws_rad, dtype=np.float64) - math.radians(rotation_deg))


def world_to_ego(points_xy: np.ndarray, ego_xy: np.ndarray, ego_yaw_rad: float) -> np.ndarray:
    """World points → ego frame: R(theta)^T (p - pos) (LEAD's `inverse_conversion_2d`), (N, 2) float64."""
    delta = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2) - np.asarray(ego_xy, dtype=np.float64)[:2]
    return delta @ rotation_2d(ego_yaw_rad)


def align_lidar(points_xyz: np.ndarray, translation_m: float, rotation_deg: float) -> np.ndarray:
    """LEAD's `align_lidar` for the perturbated rig, in its own arithmetic: `(R^T @ (p - [0, t, 0])^T)^T` with
    R the 3 x 3 yaw rotation of `np.deg2rad(rotation_deg)` (float64); the identity when t = r = 0.

    Args:
        points_xyz: (N, 3) ego-frame points.

    Returns:
        (N, 3) float64 points in the perturbated frame (the input itself, not a copy, when t = r = 0).
    """
    points = np.asarray(points_xyz, dtype=np.float64)
    if translation_m == 0.0 and rotation_deg == 0.0:
        return points  # LEAD's identity rotation changes no bit
    yaw = np.deg2rad(rotation_deg)
    rotation = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    return (rotation.T @ (points - np.array([0.0, translation_m, 0.0])).T).T


# LEAD's histogram bin edges (np.linspace(-32, 64, 385), np.linspace(-40, 40, 321)): exact multiples of 0.25
_X_EDGES = np.linspace(MIN_X_M, MAX_X_M, BEV_WIDTH_PX + 1)
_Y_EDGES = np.linspace(MIN_Y_M, MAX_Y_M, BEV_HEIGHT_PX + 1)


def _bins(values: np.ndarray, low: float, edges: np.ndarray) -> np.ndarray:
    """`np.histogramdd`'s bin of each in-range value: edges[b] <= v < edges[b + 1], the last bin closed.

    Truncating (v - low) * 4 is off by one only where the subtraction rounds across an edge, i.e. for values
    within a rounding error of an edge; those few are compared with the exact edges on both sides.
    """
    last = len(edges) - 2
    scaled = (values - low) * PIXELS_PER_M
    b = scaled.astype(np.int64)
    fraction = scaled - b
    near = np.flatnonzero((fraction < _EDGE_SLACK) | (fraction > 1.0 - _EDGE_SLACK) | (b > last))
    if len(near):
        v, nb = values[near], np.minimum(b[near], last)
        nb -= v < edges[nb]
        nb += (nb < last) & (v >= edges[np.minimum(nb + 1, last + 1)])
        b[near] = nb
    return b


_EDGE_SLACK = 1e-9  # far above the rounding error of (v - low) * 4 for |v| < 1e4 m, far below a bin (1)


def rasterize_lidar(points: np.ndarray) -> np.ndarray:
    """LiDAR points → LEAD's `rasterize_lidar` histogram as uint8 counts clipped at 5 (LEAD stores counts / 5).

    Exactly `np.histogramdd` over LEAD's edges (x in [-32, 64] → 384 columns, y in [-40, 40] → 320 rows,
    0.25 m, left-closed, the last bin also holding the upper edge) of the points with z in [-4, 10], on the
    float64 coordinates given (LEAD bins laspy's float64 values: pass those for identical counts).

    Args:
        points: (N, >=3) ego-frame points (x, y, z, ...).

    Returns:
        (320, 384) uint8, values 0..5.
    """
    points = np.asarray(points)
    x = points[:, 0].astype(np.float64, copy=False)
    y = points[:, 1].astype(np.float64, copy=False)
    z = points[:, 2].astype(np.float64, copy=False)
    keep = (z >= MIN_Z_M) & (z <= MAX_Z_M) & (x >= MIN_X_M) & (x <= MAX_X_M) & (y >= MIN_Y_M) & (y <= MAX_Y_M)
    cols = _bins(x[keep], MIN_X_M, _X_EDGES)
    rows = _bins(y[keep], MIN_Y_M, _Y_EDGES)
    rows *= BEV_WIDTH_PX
    rows += cols
    counts = np.bincount(rows, minlength=BEV_HEIGHT_PX * BEV_WIDTH_PX)
    np.minimum(counts, LIDAR_HIST_MAX_COUNT, out=counts)  # in place: a fresh 1 MB array costs page faults
    return counts.astype(np.uint8).reshape(BEV_HEIGHT_PX, BEV_WIDTH_PX)


def box_corners(center_xy: np.ndarray, half_extent_xy: np.ndarray, yaw_rad: float) -> np.ndarray:
    """(4, 2) corners of a rotated rectangle (front-left, front-right, rear-right, rear-left in box frame)."""
    ex, ey = float(half_extent_xy[0]), float(half_extent_xy[1])
    local = np.array([[ex, -ey], [ex, ey], [-ex, ey], [-ex, -ey]], dtype=np.float64)
    return local @ rotation_2d(yaw_rad).T + np.asarray(center_xy, dtype=np.float64)[:2]


_CORNER_SIGNS = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])


def box_corners_many(
    centers_xy: np.ndarray, half_extents_xy: np.ndarray, yaws_rad: list[float]
) -> np.ndarray:
    """`box_corners` of N boxes in one call; box i equals `box_corners(centers_xy[i], half_extents_xy[i],
    yaws_rad[i])` bit for bit (same rotation from `math.cos` / `math.sin`, same (4, 2) @ (2, 2) BLAS path).

    Args:
        centers_xy: (N, 2) float64 box centres.  half_extents_xy: (N, 2) float64.  yaws_rad: N floats.

    Returns:
        (N, 4, 2) float64 corners (front-left, front-right, rear-right, rear-left in box frame).
    """
    ex = np.asarray(half_extents_xy, dtype=np.float64)[:, 0]
    ey = np.asarray(half_extents_xy, dtype=np.float64)[:, 1]
    local = np.stack([ex, ey], axis=1)[:, None, :] * _CORNER_SIGNS  # (N, 4, 2); x * -1 == -x exactly
    rotations = np.array(
        [[[c, -s], [s, c]] for c, s in ((math.cos(y), math.sin(y)) for y in yaws_rad)], dtype=np.float64
    ).reshape(-1, 2, 2)
    return local @ rotations.transpose(0, 2, 1) + np.asarray(centers_xy, dtype=np.float64)[:, None, :2]


def metres_to_bev_px(points_xy: np.ndarray) -> np.ndarray:
    """Ego (x, y) metres → BEV pixel (col, row) as float64 (col = (x+32)*4, row = (y+40)*4)."""
    points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return np.stack(
        [(points_xy[:, 0] - MIN_X_M) * PIXELS_PER_M, (points_xy[:, 1] - MIN_Y_M) * PIXELS_PER_M], 1
    )


def fill_polygons(shape: tuple[int, int], polygons: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Rasterise filled convex polygons in order (later ones overwrite) into a uint8 image.

    A pixel (row, col) is covered when its centre (col + 0.5, row + 0.5) lies inside the polygon (edges
    included), so a rectangle from x0 to x1 covers exactly the pixels whose centres fall in [x0, x1].
    Polygons with the same vertex count are tested together (`polygon_masks`), each only within its
    bounding window.

    Args:
        shape: (rows, cols) of the output.
        polygons: list of ((K, 2) convex vertices as continuous (col, row) pixel coordinates, label 1..255).

    Returns:
        (rows, cols) uint8, 0 where no polygon covers a pixel.

    Raises:
        ValueError: vertices that are not (K, 2), or a non-finite vertex of a polygon.
    """
    vertices = [np.asarray(v, dtype=np.float64) for v, _ in polygons]
    if any(v.ndim != 2 or v.shape[1] != 2 for v in vertices):
        raise ValueError(f"polygon vertices must be (K, 2) arrays, found {[v.shape for v in vertices]}")
    if len({v.shape for v in vertices}) <= 1:
        stacked = np.stack(vertices) if vertices else np.zeros((0, 0, 2))
        return fill_convex(shape, stacked, [label for _, label in polygons])
    by_count: dict[int, list[int]] = {}
    for idx, polygon in enumerate(vertices):
        by_count.setdefault(len(polygon), []).append(idx)
    masks: dict[int, tuple[tuple[int, int, int, int], np.ndarray]] = {}
    for members in by_count.values():
        windows, inside = polygon_masks(np.stack([vertices[idx] for idx in members]), shape)
        for j, idx in enumerate(members):
            masks[idx] = _window_mask(windows[j].tolist(), inside[j])
    image = np.zeros(shape, dtype=np.uint8)
    for idx, (_, label) in enumerate(polygons):
        _paint(image, *masks[idx], label)
    return image


def fill_convex(shape: tuple[int, int], vertices: np.ndarray, labels: list[int]) -> np.ndarray:
    """`fill_polygons` for P polygons with the same vertex count K, given as one array.

    Args:
        shape: (rows, cols) of the output.
        vertices: (P, K, 2) float64 (col, row) pixel coordinates.
        labels: P labels 1..255, drawn in order (later ones overwrite).

    Returns:
        (rows, cols) uint8, 0 where no polygon covers a pixel.
    """
    image = np.zeros(shape, dtype=np.uint8)
    if len(vertices) == 0:
        return image
    windows, inside = polygon_masks(vertices, shape)
    for window, mask, label in zip(windows.tolist(), inside, labels, strict=True):
        _paint(image, *_window_mask(window, mask), label)
    return image


def _window_mask(window: list[int], inside: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    r0, r1, c0, c1 = window
    return (r0, r1, c0, c1), inside[: max(r1 - r0, 0), : max(c1 - c0, 0)]


def _paint(image: np.ndarray, window: tuple[int, int, int, int], inside: np.ndarray, label: int) -> None:
    r0, r1, c0, c1 = window
    if c0 < c1 and r0 < r1:
        image[r0:r1, c0:c1][inside] = label


def polygon_masks(vertices: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coverage of P convex polygons with K vertices each, within their bounding windows.

    Args:
        vertices: (P, K, 2) float64 (col, row) pixel coordinates.
        shape: (rows, cols) of the image the windows are clipped to.

    Returns:
        ((P, 4) int64 windows [r0, r1, c0, c1] clipped to the image (empty when r0 >= r1 or c0 >= c1),
        (P, H, W) bool coverage of window pixels (row r0 + i, col c0 + j) at [p, i, j]; H, W = the largest
        window, so only [p, :r1 - r0, :c1 - c0] is meaningful).
    """
    if not np.isfinite(vertices).all():
        for polygon in vertices:  # raise what int() raises on a bad bound (ValueError / OverflowError)
            for axis in (0, 1):
                int(np.floor(polygon[:, axis].min() - 0.5)), int(np.ceil(polygon[:, axis].max() + 0.5))
    # clipping before the int cast keeps every empty / non-empty decision of max(int(.), 0) and min(int(.), n)
    c0 = np.clip(np.floor(vertices[:, :, 0].min(axis=1) - 0.5), 0, shape[1]).astype(np.int64)
    c1 = np.clip(np.ceil(vertices[:, :, 0].max(axis=1) + 0.5), 0, shape[1]).astype(np.int64)
    r0 = np.clip(np.floor(vertices[:, :, 1].min(axis=1) - 0.5), 0, shape[0]).astype(np.int64)
    r1 = np.clip(np.ceil(vertices[:, :, 1].max(axis=1) + 0.5), 0, shape[0]).astype(np.int64)
    windows = np.stack([r0, r1, c0, c1], axis=1)
    height, width = int(np.maximum(r1 - r0, 0).max(initial=0)), int(np.maximum(c1 - c0, 0).max(initial=0))
    rows = ((r0[:, None] + np.arange(height)) + 0.5)[:, :, None]  # (P, H, 1) pixel-centre rows
    cols = ((c0[:, None] + np.arange(width)) + 0.5)[:, None, :]  # (P, 1, W) pixel-centre cols
    edges = np.roll(vertices, -1, axis=1) - vertices
    # cross product sign of every edge against every pixel centre; inside = all the same sign (or 0), i.e.
    # the smallest cross >= -eps or the largest <= eps (NaN fails both, as in the per-edge test)
    lowest = highest = None
    for k in range(vertices.shape[1]):
        vx, vy = vertices[:, k, 0, None, None], vertices[:, k, 1, None, None]
        ex, ey = edges[:, k, 0, None, None], edges[:, k, 1, None, None]
        cross = ex * (rows - vy) - ey * (cols - vx)
        if lowest is None:
            lowest, highest = cross, cross.copy()
        else:
            np.minimum(lowest, cross, out=lowest)
            np.maximum(highest, cross, out=highest)
    if lowest is None:
        return windows, np.ones((len(vertices), height, width), dtype=bool)
    return windows, (lowest >= -1e-9) | (highest <= 1e-9)


def in_bev(points_xy: np.ndarray) -> np.ndarray:
    """Mask of points inside the closed BEV box x in [-32, 64], y in [-40, 40]."""
    points_xy = np.asarray(points_xy)
    return (
        (points_xy[:, 0] >= MIN_X_M)
        & (points_xy[:, 0] <= MAX_X_M)
        & (points_xy[:, 1] >= MIN_Y_M)
        & (points_xy[:, 1] <= MAX_Y_M)
    )


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
