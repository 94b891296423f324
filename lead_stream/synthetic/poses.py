"""A simulated world at one step, seen from the ego or a sensor: frame transforms and per-step scene queries.

`_to_frame` / `_from_frame` move points between the world and a frame (ego or sensor rig), `_Sensor` is the
rig's offset from the ego (normal or perturbated), and `_ego_pose`, `_actor_arrays`, `_poles` read a `_World`
at one 20 Hz step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lead_stream.synthetic.world import POLE_OFFSET_M, POLE_SPACING_M, ROAD_HALF_WIDTH_M, _World


# ================================================================================================
# frames: poses and transforms
# ================================================================================================
def _to_frame(px: np.ndarray, py: np.ndarray, ox: float, oy: float, oyaw: float) -> tuple[np.ndarray, ...]:
    """World points → the frame at (ox, oy) with yaw oyaw: R(yaw)^T (p - o)."""
    c, s = math.cos(oyaw), math.sin(oyaw)
    dx, dy = px - ox, py - oy
    return c * dx + s * dy, -s * dx + c * dy


def _from_frame(lx: np.ndarray, ly: np.ndarray, ox: float, oy: float, oyaw: float) -> tuple[np.ndarray, ...]:
    """Points of the frame at (ox, oy, oyaw) → world: o + R(yaw) p."""
    c, s = math.cos(oyaw), math.sin(oyaw)
    return ox + c * lx - s * ly, oy + s * lx + c * ly


def _ego_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)


@dataclass
class _Sensor:
    """The sensor rig's frame relative to the ego: normal (0, 0, 0) or perturbated (0, t, r)."""

    dy: float
    dyaw: float

    def from_ego(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _to_frame(x, y, 0.0, self.dy, self.dyaw)


# ================================================================================================
# per-step scene queries
# ================================================================================================
def _ego_pose(world: _World, step: int) -> tuple[float, float, float]:
    return float(world.ego_x[step]), float(world.ego_y[step]), float(world.ego_yaw[step])


def _actor_arrays(world: _World, step: int) -> tuple[np.ndarray, ...]:
    """World x, y, yaw, speed, extents (n, 3) of all actors at `step`."""
    return (
        world.actor_x[:, step],
        world.actor_y[:, step],
        world.actor_yaw[:, step],
        world.actor_speed[:, step],
        world.actor_extent,
    )


def _poles(world: _World, u_lo: float, u_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """World positions of the street-light poles with arc length in [u_lo, u_hi] (both road sides)."""
    first = math.ceil(u_lo / POLE_SPACING_M) * POLE_SPACING_M
    u = np.arange(first, u_hi, POLE_SPACING_M)
    u = np.concatenate([u, u + POLE_SPACING_M / 2])
    side = np.repeat([POLE_OFFSET_M, -POLE_OFFSET_M], len(u) // 2)
    if world.light_u is not None and u_lo <= world.light_u <= u_hi:  # the traffic light's mast
        u = np.append(u, world.light_u + 1.0)
        side = np.append(side, ROAD_HALF_WIDTH_M + 1.0)
    x, y, _ = world.road.pose(u, side)
    return x, y


def _sensor_pose_world(world: _World, step: int, sensor: _Sensor) -> tuple[float, float, float]:
    ex, ey, eyaw = _ego_pose(world, step)
    wx, wy = _from_frame(np.array([0.0]), np.array([sensor.dy]), ex, ey, eyaw)
    return float(wx[0]), float(wy[0]), eyaw + sensor.dyaw
