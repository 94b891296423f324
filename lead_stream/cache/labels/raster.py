"""Rotated boxes and polygons → pixels exactly as LEAD's occupancy drawing does them with OpenCV, in numpy.

LEAD (`build_bev_occupancy`) takes a box's corners from `cv2.boxPoints` (float32 arithmetic), truncates them
to int32 and fills the quadrilateral with `cv2.fillPoly` (8-connected), whose result is the union of the
polygon's edge lines (Bresenham, boundary pixels included) and a scanline fill between the edges' 16.16
fixed-point x positions (pixel centres between them), a row's spans paired in x order (even-odd). Hulls come from
`cv2.convexHull` over such integer corners. `box_points`, `fill_poly` and `convex_hull` reproduce those
rules (checked pixel for pixel against OpenCV on random polygons); `fill_poly` draws into a window of the
full grid, since only the cropped BEV is kept. Differences: a polygon reaching past the full grid's border
is not clipped the way OpenCV clips it (it never reaches the cropped window).
"""

from __future__ import annotations

import math

import numpy as np

_XY_SHIFT = 16  # OpenCV's fixed-point fraction bits
_ONE = 1 << _XY_SHIFT


def box_points(center_x: float, center_y: float, width: float, height: float, angle_deg: float) -> np.ndarray:
    """`cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)`: (4, 2) int32 corners (x, y).

    RotatedRect holds float32 values; its `points()` computes in float32 from cos/sin taken in double.
    """
    cx, cy = np.float32(center_x), np.float32(center_y)
    w, h = np.float32(width), np.float32(height)
    angle = float(np.float32(angle_deg)) * math.pi / 180.0
    b = np.float32(math.cos(angle)) * np.float32(0.5)
    a = np.float32(math.sin(angle)) * np.float32(0.5)
    p0 = (cx - a * h - b * w, cy + b * h - a * w)
    p1 = (cx + a * h - b * w, cy - b * h - a * w)
    p2 = (np.float32(2) * cx - p0[0], np.float32(2) * cy - p0[1])
    p3 = (np.float32(2) * cx - p1[0], np.float32(2) * cy - p1[1])
    return np.array([p0, p1, p2, p3], dtype=np.float32).astype(np.int32)


def _line_pixels(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (xs, ys) of OpenCV's 8-connected line from (x0, y0) to (x1, y1) (LineIterator, left to right)."""
    if x1 < x0:
        x0, y0, x1, y1 = x1, y1, x0, y0
    dx, dy = x1 - x0, y1 - y0
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    if dy > dx:  # y is the major axis
        i = np.arange(dy + 1)
        return x0 + _minor_steps(dy, dx, i), y0 + sy * i
    i = np.arange(dx + 1)
    return x0 + i, y0 + sy * _minor_steps(dx, dy, i)


def _minor_steps(major: int, minor: int, i: np.ndarray) -> np.ndarray:
    """Minor-axis steps after `i` major steps of OpenCV's LINE_8 iterator: err starts at major - 2 minor, a
    step with err < 0 also moves the minor axis (err += 2 major), every step subtracts 2 minor; closed form
    ceil((2 minor i - major) / (2 major)), at least 0."""
    if major == 0:
        return np.zeros_like(i)
    return np.maximum(0, -((major - 2 * minor * i) // (2 * major)))


def fill_poly(window: np.ndarray, origin: tuple[int, int], points: np.ndarray, label: int) -> None:
    """`cv2.fillPoly(grid, [points], label)` restricted to `window`, a view of the grid.

    Args:
        window: (H, W) uint8 array, painted in place.
        origin: (row, col) of the window's top-left pixel in the full grid.
        points: (K, 2) int vertices (x = column, y = row) in full-grid pixels.
        label: value written.
    """
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if len(pts) == 0:
        return
    row0, col0 = origin
    height, width = window.shape
    xs_all, ys_all = [], []
    for k in range(len(pts)):  # edge (v[k-1], v[k]), as CollectPolyEdges walks them
        xa, ya = (int(v) for v in pts[k - 1])
        xb, yb = (int(v) for v in pts[k])
        lx, ly = _line_pixels(xa, ya, xb, yb)
        xs_all.append(lx)
        ys_all.append(ly)
    rows_x = _scan_spans(pts)
    if rows_x is not None:
        span_rows, x_left, x_right = rows_x
        lengths = x_right - x_left + 1
        keep = lengths > 0
        span_rows, x_left, lengths = span_rows[keep], x_left[keep], lengths[keep]
        if len(span_rows):
            offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            xs_all.append(np.repeat(x_left, lengths) + offsets)
            ys_all.append(np.repeat(span_rows, lengths))
    xs = np.concatenate(xs_all) - col0
    ys = np.concatenate(ys_all) - row0
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    window[ys[inside], xs[inside]] = label


def _scan_spans(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(row, x_left, x_right) spans of OpenCV's FillEdgeCollection for one polygon, or None (< 2 edges).

    Each non-horizontal edge is active on rows y_top <= y < y_bottom with x = x_top << 16 advanced by
    dx = trunc(((x_bottom - x_top) << 16) / (y_bottom - y_top)) per row; a row's active x values are sorted
    and paired, and each pair fills [ceil(x_a), floor(x_b)] (the edge lines add the boundary pixels).
    """
    rows, xs = [], []
    for k in range(len(pts)):
        x0, y0 = (int(v) for v in pts[k - 1])
        x1, y1 = (int(v) for v in pts[k])
        if y0 == y1:
            continue
        if y0 > y1:
            x0, y0, x1, y1 = x1, y1, x0, y0
        num = (x1 - x0) << _XY_SHIFT
        den = y1 - y0
        step = abs(num) // den * (1 if num >= 0 else -1)  # C++ integer division truncates toward zero
        y = np.arange(y0, y1, dtype=np.int64)
        rows.append(y)
        xs.append((x0 << _XY_SHIFT) + (y - y0) * step)
    if len(rows) < 2:
        return None
    row = np.concatenate(rows)
    x = np.concatenate(xs)
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    counts = np.bincount(row - row.min())
    if (counts % 2).any():  # an open polygon cannot happen with closed edge loops; keep whole pairs only
        starts = np.cumsum(counts) - counts
        rank = np.arange(len(row)) - np.repeat(starts, counts)[: len(row)]
        keep = rank < np.repeat(counts - counts % 2, counts)[: len(row)]
        row, x = row[keep], x[keep]
    return row[0::2], (x[0::2] + _ONE - 1) >> _XY_SHIFT, x[1::2] >> _XY_SHIFT


def convex_hull(points: np.ndarray) -> np.ndarray:
    """(K, 2) int64 vertices of the convex hull of integer points, collinear points dropped (as
    `cv2.convexHull`), counter-clockwise from the lowest (x, y); fewer than 3 distinct points are returned
    as they are."""
    pts = np.unique(np.asarray(points, dtype=np.int64).reshape(-1, 2), axis=0)
    if len(pts) < 3:
        return pts

    def cross(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(ordered: list[tuple[int, int]]) -> list[tuple[int, int]]:
        chain: list[tuple[int, int]] = []
        for point in ordered:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], point) <= 0:
                chain.pop()
            chain.append(point)
        return chain

    ordered = [(int(x), int(y)) for x, y in pts.tolist()]
    lower, upper = half(ordered), half(ordered[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.int64)
