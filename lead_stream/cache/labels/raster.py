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


def fill_polygons(
    window: np.ndarray, origin: tuple[int, int], polygons: list[np.ndarray], labels: list[int]
) -> None:
    """`cv2.fillPoly(grid, [p], label)` for each polygon in order (later ones over earlier ones), restricted
    to `window`, a view of the grid: every polygon's pixels computed in one vectorised pass.

    Args:
        window: (H, W) uint8 array, painted in place.
        origin: (row, col) of the window's top-left pixel in the full grid.
        polygons: (K_i, 2) int vertices (x = column, y = row) in full-grid pixels, each a closed polygon.
        labels: value written for each polygon.
    """
    if not polygons:
        return
    counts = np.array([len(p) for p in polygons], dtype=np.int64)
    ends = np.cumsum(counts)
    head = np.concatenate(polygons).astype(np.int64).reshape(-1, 2)  # edge k ends at vertex k...
    previous = np.arange(len(head)) - 1
    previous[ends - counts] = ends - 1  # ...and starts at vertex k - 1 of its polygon (v[-1] for k = 0)
    tail = head[previous]
    edge_polygon = np.repeat(np.arange(len(polygons)), counts)
    line_x, line_y, line_polygon = _lines(tail, head, edge_polygon)
    span_x, span_y, span_polygon = _spans(tail, head, edge_polygon)
    xs = np.concatenate([line_x, span_x]) - origin[1]
    ys = np.concatenate([line_y, span_y]) - origin[0]
    owner = np.concatenate([line_polygon, span_polygon])
    height, width = window.shape
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    flat = ys[inside] * width + xs[inside]
    owner = owner[inside]
    order = np.lexsort((owner, flat))  # per pixel, the last polygon drawing it wins
    flat, owner = flat[order], owner[order]
    last = np.ones(len(flat), dtype=bool)
    last[:-1] = flat[1:] != flat[:-1]
    window.reshape(-1)[flat[last]] = np.asarray(labels, dtype=window.dtype)[owner[last]]


def fill_poly(window: np.ndarray, origin: tuple[int, int], points: np.ndarray, label: int) -> None:
    """`fill_polygons` of one polygon."""
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if len(pts):
        fill_polygons(window, origin, [pts], [label])


def _lines(tail: np.ndarray, head: np.ndarray, polygon: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pixels (x, y, polygon) of OpenCV's 8-connected lines (LineIterator, left to right) of every edge.

    The minor-axis offset after i major steps is ceil((2 minor i - major) / (2 major)), at least 0: the
    iterator's error term starts at major - 2 minor, every step subtracts 2 minor, and a step taken with a
    negative error also moves the minor axis (adding 2 major).
    """
    swap = head[:, 0] < tail[:, 0]
    start = np.where(swap[:, None], head, tail)
    stop = np.where(swap[:, None], tail, head)
    dx = stop[:, 0] - start[:, 0]
    dy = stop[:, 1] - start[:, 1]
    sy = np.where(dy < 0, -1, 1)
    dy = np.abs(dy)
    y_major = dy > dx
    major = np.where(y_major, dy, dx)
    minor = np.where(y_major, dx, dy)
    n = major + 1
    edge = np.repeat(np.arange(len(n)), n)
    i = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    big, small = major[edge], minor[edge]
    steps = np.maximum(0, -((big - 2 * small * i) // np.maximum(2 * big, 1)))
    steps[big == 0] = 0
    ym = y_major[edge]
    xs = start[edge, 0] + np.where(ym, steps, i)
    ys = start[edge, 1] + sy[edge] * np.where(ym, i, steps)
    return xs, ys, polygon[edge]


def _spans(tail: np.ndarray, head: np.ndarray, polygon: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pixels (x, y, polygon) of OpenCV's FillEdgeCollection spans of every polygon.

    Each non-horizontal edge is active on rows y_top <= y < y_bottom with x = x_top << 16 advanced by
    dx = trunc(((x_bottom - x_top) << 16) / (y_bottom - y_top)) per row; a row's active x values are sorted
    and paired, and each pair fills [ceil(x_a), floor(x_b)] (the edge lines add the boundary pixels).
    """
    empty = np.zeros(0, dtype=np.int64)
    keep = tail[:, 1] != head[:, 1]
    if keep.sum() < 2:
        return empty, empty, empty
    a, b, owner = tail[keep], head[keep], polygon[keep]
    down = a[:, 1] < b[:, 1]
    top = np.where(down[:, None], a, b)
    bottom = np.where(down[:, None], b, a)
    num = (bottom[:, 0] - top[:, 0]) << _XY_SHIFT
    rows = bottom[:, 1] - top[:, 1]
    step = np.sign(num) * (np.abs(num) // rows)  # C++ integer division truncates toward zero
    edge = np.repeat(np.arange(len(rows)), rows)
    j = np.arange(int(rows.sum())) - np.repeat(np.cumsum(rows) - rows, rows)
    row = top[edge, 1] + j
    x = (top[edge, 0] << _XY_SHIFT) + j * step[edge]
    owner = owner[edge]
    order = np.lexsort((x, row, owner))
    row, x, owner = row[order], x[order], owner[order]
    group = np.ones(len(row), dtype=bool)  # first entry of each (polygon, row)
    group[1:] = (row[1:] != row[:-1]) | (owner[1:] != owner[:-1])
    starts = np.flatnonzero(group)
    sizes = np.diff(np.append(starts, len(row)))
    rank = np.arange(len(row)) - np.repeat(starts, sizes)
    keep = rank < np.repeat(sizes - sizes % 2, sizes)  # whole pairs (closed polygons give even counts)
    row, x, owner = row[keep], x[keep], owner[keep]
    left = (x[0::2] + _ONE - 1) >> _XY_SHIFT
    right = x[1::2] >> _XY_SHIFT
    length = np.maximum(right - left + 1, 0)
    offsets = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    return np.repeat(left, length) + offsets, np.repeat(row[0::2], length), np.repeat(owner[0::2], length)


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
