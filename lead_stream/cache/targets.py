"""One frame's meta → ego targets: speed/controls, commands, target points, waypoints, yaws, route.

Input: metas/NNNN.pkl as a dict (world-frame target points and route, future positions/yaws, perturbation).
Output: `sample_targets(meta)`, the JSON-ready dict behind the "targets" group of arrays.lz4 and the
per-variant planning arrays, with floats rounded to `TARGETS_DECIMALS`. Semantics follow LEAD's `CARLAData`
(LEAD_FORMAT §4.1 steps 5 and 7). The one non-obvious rule: target points are merged in the TRUE ego frame, then each variant moves
them (and waypoints, route, yaws) with p' = R(r)^T (p - [0, t]), psi' = wrap(psi - r) (r in degrees).

Differences from LEAD, on purpose:
* navigation / planning targets are stored as float32 (what training consumes), not float64;
* future waypoints / yaws are always 8 long: missing steps repeat the last one (zeros if none) and
  `planning_valid` is False (LEAD returns a shorter array);
* a route that `smooth_path` cannot resample gives 10 zero points and `planning_valid` False.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lead_stream.core import geometry
from lead_stream.core.constants import (
    NUM_ROUTE_POINTS,
    NUM_WAYPOINTS,
    TP_POP_DISTANCE_M,
    WAYPOINT_SPACING_STEPS,
)

TARGETS_DECIMALS = 6  # targets floats rounded to 1e-6 (m, rad, m/s)
ROUTE_FIRST_DISTANCE_M = 2.5  # smooth_path: first point on the 2.5 m circle
ROUTE_SPACING_M = 1.0
NUM_ROUTE_POINTS_SMOOTHING = 20  # meta route points fed to smooth_path
PLANNING_MIN_FUTURE_STEPS = NUM_WAYPOINTS * WAYPOINT_SPACING_STEPS + 1  # 41
TP_KEY = str(float(TP_POP_DISTANCE_M))  # "3.25"


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


def _first_occurrences(points_xy: np.ndarray) -> list[int]:
    """Indices of the first occurrence of each distinct (x, y) row, in order: the rows
    `np.unique(points_xy, axis=0, return_index=True)` keeps (exact equality, -0.0 == 0.0, NaN rows distinct).

    Args:
        points_xy: (N, 2) float64.
    """
    seen: set[tuple[float, float]] = set()
    keep: list[int] = []
    for idx, (x, y) in enumerate(points_xy.tolist()):
        if (x, y) not in seen:  # fresh NaN objects never compare equal, as in np.unique's row compare
            seen.add((x, y))
            keep.append(idx)
    return keep


def _allclose_xy(a: np.ndarray, b: np.ndarray) -> bool:
    """`np.allclose(a, b)` (rtol 1e-5, atol 1e-8) for two (2,) float64 points, in plain float arithmetic."""
    if a.shape != (2,) or b.shape != (2,):
        return bool(np.allclose(a, b))
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        # numpy: (|x - y| <= atol + rtol * |y|) & isfinite(y) | (x == y), in float64
        if not ((abs(x - y) <= 1e-08 + 1e-05 * abs(y) and math.isfinite(y)) or x == y):
            return False
    return True


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
    points = route_xy[_first_occurrences(route_xy)]
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
        if len(points) == 2 or not kept_points or not _allclose_xy(point, kept_points[-1]):
            kept_points.append(point)
            kept_commands.append(command)
    if len(kept_points) < 2:
        raise ValueError(f"next_target_points_{TP_KEY}: fewer than 2 distinct points after merging")
    ego = world_to_ego_meta(np.stack(kept_points), meta)
    return ego, kept_commands


def world_to_ego_meta(points_xy: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """World (x, y) → true ego frame with the meta's pos_global and theta."""
    return geometry.world_to_ego(
        points_xy, np.asarray(meta["pos_global"], dtype=np.float64)[:2], float(meta["theta"])
    )


def _finite(value: Any, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, found {value}")
    return round(value, TARGETS_DECIMALS)


def planning_targets(
    meta: dict[str, Any], *, translation_m: float, rotation_deg: float, target_points: np.ndarray
) -> tuple[dict[str, Any], bool]:
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
    waypoints = _pad_rows(
        geometry.perturb_points(waypoints.reshape(-1, 2), translation_m, rotation_deg), NUM_WAYPOINTS
    )
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
    if not (
        np.isfinite(waypoints).all()
        and np.isfinite(yaws).all()
        and np.isfinite(route).all()
        and np.isfinite(tps).all()
    ):
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
    """The sample targets: ego scalars, commands and both variants' navigation/planning labels."""
    translation_m = _finite(meta["perturbation_translation"], "perturbation_translation")
    rotation_deg = _finite(meta["perturbation_rotation"], "perturbation_rotation")
    target_points, commands = target_point_list(meta)
    normal, route_ok = planning_targets(
        meta, translation_m=0.0, rotation_deg=0.0, target_points=target_points
    )
    perturbated, _ = planning_targets(
        meta, translation_m=translation_m, rotation_deg=rotation_deg, target_points=target_points
    )
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
