"""World at a step → LiDAR and radar point clouds in the ego frame, plus points per actor (no file I/O).

`_lidar` accumulates 5 sweeps of box faces, poles and building facades and 10 ticks of motion-compensated
radar returns (near ones x5, like LEAD), shifts z by LEAD's -1.25 m, then crops to LEAD's range and drops
the ego box. Radar scans are drawn from a per-step random stream and cached on the world, so a step's points
do not depend on which frames were written before it.
"""

from __future__ import annotations

import math

import numpy as np

from lead_stream.core.constants import (
    MAX_RADAR_POINTS_PER_SENSOR,
    MAX_X_M,
    MAX_Y_M,
    MAX_Z_M,
    MIN_X_M,
    MIN_Y_M,
    MIN_Z_M,
)
from lead_stream.synthetic.poses import (
    _actor_arrays,
    _ego_pose,
    _from_frame,
    _poles,
    _to_frame,
)
from lead_stream.synthetic.world import (
    BUILDING_OFFSET_M,
    EGO_EXTENT_M,
    _World,
    _wrap,
)

# --- generator settings (fixed; LEAD's values where LEAD has one) ---------------------------------
LIDAR_Z_SHIFT_M = -1.25  # LEAD's `z -= 1.25`: LiDAR ground is at z = -1.25 in the ego frame
RADAR_Z_SHIFT_M = -0.3
RADAR_MOUNTS = (  # x, y, z (m), yaw (deg) of radar1..radar4
    (2.6, 0.0, 0.6, -45.0),
    (2.6, 0.0, 0.6, 45.0),
    (-2.6, 0.0, 0.6, 135.0),
    (-2.6, 0.0, 0.6, 225.0),
)
RADAR_RANGE_M = 100.0
RADAR_HALF_FOV_RAD = math.radians(45.0)
NUM_LIDAR_SWEEPS = 5
NUM_RADAR_SWEEPS = 10


def _radar_points(world: _World, step: int) -> list[np.ndarray]:
    """Per radar sensor (n, 4) float64 [x, y, z, v] in the ego frame of `step` (deterministic per step)."""
    if step not in world.radar_cache:
        world.radar_cache[step] = _radar_scan(world, step)
    return world.radar_cache[step]


def _radar_scan(world: _World, step: int) -> list[np.ndarray]:
    rng = np.random.default_rng([*world.stream_seed, 4, step])
    ex, ey, eyaw = _ego_pose(world, step)
    ax, ay, ayaw, aspeed, extent = _actor_arrays(world, step)
    px, py = _poles(world, world.ego_u[step] - 40.0, world.ego_u[step] + 100.0)
    gx = np.concatenate([ax, px])
    gy = np.concatenate([ay, py])
    vx = np.concatenate([aspeed * np.cos(ayaw), np.zeros(len(px))]) - world.ego_speed[step] * math.cos(eyaw)
    vy = np.concatenate([aspeed * np.sin(ayaw), np.zeros(len(px))]) - world.ego_speed[step] * math.sin(eyaw)
    size = np.concatenate([extent[:, 1], np.full(len(px), 0.15)])
    lx, ly = _to_frame(gx, gy, ex, ey, eyaw)
    lvx, lvy = _to_frame(vx, vy, 0.0, 0.0, eyaw)
    sensors = []
    for mx, my, _, myaw in RADAR_MOUNTS:
        dx, dy = lx - mx, ly - my
        dist = np.hypot(dx, dy)
        bearing = _wrap(np.arctan2(dy, dx) - math.radians(myaw))
        seen = np.flatnonzero((dist < RADAR_RANGE_M) & (dist > 1.0) & (np.abs(bearing) < RADAR_HALF_FOV_RAD))
        counts = np.clip(250.0 / dist[seen], 1, 8).astype(int)
        idx = np.repeat(seen, counts)  # one row per radar return, nearest targets first
        idx = idx[np.argsort(dist[idx], kind="stable")][:MAX_RADAR_POINTS_PER_SENSOR]
        unit_x, unit_y = dx[idx] / dist[idx], dy[idx] / dist[idx]
        jitter = rng.uniform(-1.0, 1.0, len(idx)) * size[idx]
        points = np.stack(
            [
                lx[idx] - unit_x * size[idx] - unit_y * jitter,  # on the face towards the radar
                ly[idx] - unit_y * size[idx] + unit_x * jitter,
                rng.uniform(0.2, 1.2, len(idx)) + RADAR_Z_SHIFT_M,
                lvx[idx] * unit_x + lvy[idx] * unit_y,
            ],
            axis=1,
        )  # radial velocity, + = receding
        sensors.append(points)
    return sensors


def _surface_points(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, yaw: np.ndarray, extent: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR hits (n, 3) on the box sides facing the sensor at the origin, and the box index of each hit.

    Boxes stand on the ground (z = 0); hits per face fall off with the squared distance like a real scan.
    """
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    sign = np.array([1.0, -1.0, 0.0, 0.0])[None]  # faces: front, back, right, left
    side = np.array([0.0, 0.0, 1.0, -1.0])[None]
    fx, fy = sign * extent[:, 0:1], side * extent[:, 1:2]  # face centres in the box frame
    cx, cy = x[:, None] + c * fx - s * fy, y[:, None] + s * fx + c * fy
    nx, ny = c * sign - s * side, s * sign + c * side  # outward normals
    length = np.where(sign != 0, 2 * extent[:, 1:2], 2 * extent[:, 0:1])
    height = np.broadcast_to(2 * extent[:, 2:3], length.shape)
    density = np.clip(600.0 / np.maximum(np.hypot(x, y), 1.0) ** 2, 0.3, 60.0)[:, None]  # hits per m^2
    counts = np.where(nx * cx + ny * cy < 0, np.minimum(density * length * height, 300), 0).astype(int)
    face = np.repeat(np.arange(counts.size), counts.ravel())
    along = rng.uniform(-0.5, 0.5, len(face)) * length.ravel()[face]
    cx, cy, nx, ny = (a.ravel()[face] for a in (cx, cy, nx, ny))
    points = np.stack(
        [cx - ny * along, cy + nx * along, rng.uniform(0.0, 1.0, len(face)) * height.ravel()[face]], axis=1
    )
    return points, face // 4


def _lidar(world: _World, step: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Accumulated (N, 4) [x, y, z, time] LiDAR of `step` (ego frame) and per-actor hits of sweep 0."""
    ex, ey, eyaw = _ego_pose(world, step)
    chunks = []
    owners = []  # per chunk: actor index for the current sweep's actor points (num_points), else -1

    def add(pts: np.ndarray, age: int | None = None, owner: int = -1) -> None:
        chunks.append(pts if age is None else np.concatenate([pts, np.full((len(pts), 1), age)], axis=1))
        owners.append(np.full(len(pts), owner))

    for age in range(NUM_LIDAR_SWEEPS):
        k = max(step - age, 0)
        ax, ay, ayaw, _, extent = _actor_arrays(world, k)
        lx, ly = _to_frame(ax, ay, ex, ey, eyaw)
        lyaw = ayaw - eyaw
        near = np.flatnonzero((lx > MIN_X_M - 5) & (lx < MAX_X_M + 5) & (np.abs(ly) < MAX_Y_M + 5))
        pts, box = _surface_points(rng, lx[near], ly[near], lyaw[near], extent[near])
        chunks.append(np.concatenate([pts, np.full((len(pts), 1), age)], axis=1))
        owners.append(near[box] if age == 0 else np.full(len(pts), -1))
        # poles: thin cylinders sampled as vertical lines
        px, py = _poles(world, world.ego_u[step] + MIN_X_M - 10, world.ego_u[step] + MAX_X_M + 10)
        plx, ply = _to_frame(px, py, ex, ey, eyaw)
        n_per = 12
        ang = rng.uniform(0, 2 * math.pi, (len(plx), n_per))
        pts = np.stack(
            [
                (plx[:, None] + 0.15 * np.cos(ang)).ravel(),
                (ply[:, None] + 0.15 * np.sin(ang)).ravel(),
                rng.uniform(0.0, 6.0, len(plx) * n_per),
            ],
            axis=1,
        )
        add(pts, age)
        # building facades along both sides of the road
        u = rng.uniform(world.ego_u[step] + MIN_X_M - 10, world.ego_u[step] + MAX_X_M + 10, 1200)
        side = np.where(rng.random(1200) < 0.5, -BUILDING_OFFSET_M, BUILDING_OFFSET_M)
        wx, wy, _ = world.road.pose(u, side)
        wlx, wly = _to_frame(wx, wy, ex, ey, eyaw)
        gap = (np.floor(u / 23.0) % 3) == 0  # every third 23 m block is an open lot
        pts = np.stack([wlx, wly, rng.uniform(0.0, 8.0, len(u))], axis=1)[~gap]
        add(pts, age)
    # radar returns of the last 10 ticks, motion-compensated; near ones duplicated x5 like LEAD
    for age in range(NUM_RADAR_SWEEPS):
        k = max(step - age, 0)
        kx, ky, kyaw = _ego_pose(world, k)
        for sensor in _radar_points(world, k):
            if not len(sensor):
                continue
            wx, wy = _from_frame(sensor[:, 0], sensor[:, 1], kx, ky, kyaw)
            lx, ly = _to_frame(wx, wy, ex, ey, eyaw)
            pts = np.stack([lx, ly, sensor[:, 2] - LIDAR_Z_SHIFT_M, np.full(len(lx), age)], axis=1)
            near = np.hypot(lx, ly) < 32.0
            add(np.concatenate([pts] + [pts[near]] * 4))
    owner = np.concatenate(owners)
    points = np.concatenate(chunks)
    points[:, 2] += LIDAR_Z_SHIFT_M
    keep = (
        (points[:, 0] >= MIN_X_M)
        & (points[:, 0] < MAX_X_M)
        & (points[:, 1] >= MIN_Y_M)
        & (points[:, 1] < MAX_Y_M)
        & (points[:, 2] >= MIN_Z_M)
        & (points[:, 2] < MAX_Z_M)
        & ~((np.abs(points[:, 0]) < EGO_EXTENT_M[0]) & (np.abs(points[:, 1]) < EGO_EXTENT_M[1]))
    )
    hits = np.bincount(owner[keep] + 1, minlength=len(world.actors) + 1)[1:]
    return points[keep], hits


def _radar_hits(world: _World, step: int, radar: list[np.ndarray]) -> dict[int, int]:
    """Radar points per actor id (the points lie within ~1 m of the actor's box)."""
    ex, ey, eyaw = _ego_pose(world, step)
    ax, ay, _, _, extent = _actor_arrays(world, step)
    lx, ly = _to_frame(ax, ay, ex, ey, eyaw)
    points = np.concatenate(radar)[:, :2] if radar else np.zeros((0, 2))
    hits: dict[int, int] = {}
    if not len(points):
        return hits
    for i, actor in enumerate(world.actors):
        d = np.hypot(points[:, 0] - lx[i], points[:, 1] - ly[i])
        n = int((d < extent[i, 0] + 1.0).sum())
        if n:
            hits[actor.actor_id] = n
    return hits
