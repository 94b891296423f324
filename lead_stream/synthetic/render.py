"""World at a step → camera RGB, semantics and depth arrays and the BEV HD map (no file I/O).

`_render_map` rasterises the road (ChauffeurNet ids) in any frame. `_render_cameras` colours ground pixels
through the fixed ray/ground table of the 3-camera rig (`_rig()`, built once per process) and draws the
`_solids` (actors, poles, buildings, the traffic light's head) as the screen rectangles of their projected
boxes, far to near, so the same actors appear in images, semantics and the visible-pixel counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lead_stream.core.constants import (
    CAMERA_FOV_DEG,
    CAMERA_HEIGHT_PX,
    CAMERA_POSITIONS_M,
    CAMERA_WIDTH_PX,
    CAMERA_YAWS_DEG,
    DEPTH_MAX_M,
    SemanticClass,
)
from lead_stream.synthetic.poses import (
    _actor_arrays,
    _ego_pose,
    _poles,
    _Sensor,
    _to_frame,
)
from lead_stream.synthetic.world import (
    BUILDING_OFFSET_M,
    LANE_WIDTH_M,
    ROAD_HALF_WIDTH_M,
    _World,
)

# --- generator settings (fixed; LEAD's values where LEAD has one) ---------------------------------
HDMAP_SOLID, HDMAP_BROKEN, HDMAP_ROAD = 3, 4, 1
POLE_EXTENT_M = (0.15, 0.15, 3.0)
BUILDING_EXTENT_M = (11.0, 5.0, 4.0)
CAMERA_FOCAL_PX = (CAMERA_WIDTH_PX / 2.0) / math.tan(math.radians(CAMERA_FOV_DEG / 2.0))
CAMERA_MAP_RANGE = (-4.0, 100.0, -64.0, 64.0)  # x_min, x_max, y_min, y_max of the BEV map behind the cameras
CAMERA_MAP_PPM = 4.0


def _render_map(
    world: _World,
    ox: float,
    oy: float,
    oyaw: float,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    ppm: float,
    u_window: tuple[float, float],
) -> np.ndarray:
    """Rasterise the road (ChauffeurNet ids: 1 road, 3 solid, 4 broken marking) in the frame (ox, oy, oyaw).

    Rows = +y, cols = +x; pixel (0, 0) is (x_range[0], y_range[0]).
    """
    from PIL import Image, ImageDraw

    width = round((x_range[1] - x_range[0]) * ppm)
    height = round((y_range[1] - y_range[0]) * ppm)
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    road = world.road
    lo, hi = max(u_window[0], road.u[0]), min(u_window[1], road.u[-1])
    u = np.arange(lo, hi, 1.0)

    def pixels(offset: float, us: np.ndarray = u) -> list[tuple[float, float]]:
        x, y, _ = road.pose(us, offset)
        fx, fy = _to_frame(x, y, ox, oy, oyaw)
        cols = (fx - x_range[0]) * ppm
        rows = (fy - y_range[0]) * ppm
        return list(zip(cols.tolist(), rows.tolist()))

    draw.polygon(pixels(-ROAD_HALF_WIDTH_M) + pixels(ROAD_HALF_WIDTH_M)[::-1], fill=HDMAP_ROAD)
    line_width = max(1, round(0.15 * ppm))
    for offset in (-ROAD_HALF_WIDTH_M, ROAD_HALF_WIDTH_M, -0.5 * LANE_WIDTH_M):
        draw.line(pixels(offset), fill=HDMAP_SOLID, width=line_width)
    dash_starts = np.arange(math.floor(lo / 9.0) * 9.0, hi, 9.0)  # 3 m dashes every 9 m
    ends = pixels(0.5 * LANE_WIDTH_M, np.stack([dash_starts, dash_starts + 3.0], axis=1).ravel())
    for start, end in zip(ends[0::2], ends[1::2], strict=True):
        draw.line([start, end], fill=HDMAP_BROKEN, width=line_width)
    return np.asarray(image, dtype=np.uint8)


@dataclass
class _Rig:
    """Per-pixel ground intersections of the 3-camera rig (constant: the rig is fixed in the sensor frame).

    `base_code` holds the pixel code when nothing is drawn: 0 terrain, 5.. sky (one code per 16 rows);
    ground pixels whose ray hits the camera map get the map's ChauffeurNet id (1 road, 3/4 marking).
    """

    hit_pixels: np.ndarray  # (n,) flat pixel indices whose ground hit lies inside the camera map
    hit_cells: np.ndarray  # (n,) flat camera-map cells they hit
    base_code: np.ndarray  # (H, W) uint8
    base_depth: np.ndarray  # (H, W) float32 camera z-depth of the ground hit, 1000 for sky
    rgba_lut: np.ndarray  # (num_codes,) uint32: RGB + 0 packed, for one-lookup colouring
    sem_lut: np.ndarray  # (num_codes,) uint8


_SKY_CODE = 5


def _make_rig() -> _Rig:
    h, w = CAMERA_HEIGHT_PX, CAMERA_WIDTH_PX
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    right = (u + 0.5 - w / 2) / CAMERA_FOCAL_PX
    down = (v + 0.5 - h / 2) / CAMERA_FOCAL_PX
    x_min, x_max, y_min, y_max = CAMERA_MAP_RANGE
    map_w = round((x_max - x_min) * CAMERA_MAP_PPM)
    cells, codes, depths = [], [], []
    sky = down <= 1e-3
    sky_code = (_SKY_CODE + v // 16).astype(np.uint8)
    for (cx, cy, cz), yaw_deg in zip(CAMERA_POSITIONS_M, CAMERA_YAWS_DEG):
        yaw = math.radians(yaw_deg)
        c, s = math.cos(yaw), math.sin(yaw)
        lam = np.where(sky, 1000.0, cz / np.maximum(down, 1e-3))
        gx = cx + lam * (c - s * right)
        gy = cy + lam * (s + c * right)
        inside = (~sky) & (gx >= x_min) & (gx < x_max) & (gy >= y_min) & (gy < y_max)
        col = np.floor((gx - x_min) * CAMERA_MAP_PPM).astype(np.int64)
        row = np.floor((gy - y_min) * CAMERA_MAP_PPM).astype(np.int64)
        cells.append(np.where(inside, row * map_w + col, -1))
        codes.append(np.where(sky, sky_code, 0).astype(np.uint8))
        depths.append(lam.astype(np.float32))
    cell = np.concatenate(cells, 1).ravel()
    hit_pixels = np.flatnonzero(cell >= 0)
    num_sky_codes = h // 16 // 2 + 1
    sky_rgb = [(110 + 90 * t, 150 + 70 * t, 215 + 30 * t) for t in np.linspace(0, 1, num_sky_codes)]
    rgb_lut = np.array(
        [[96, 112, 84], [70, 70, 74], [0, 0, 0], [225, 225, 225], [215, 205, 140]] + sky_rgb, np.float64
    )
    sem_lut = np.zeros(len(rgb_lut), np.uint8)
    sem_lut[1], sem_lut[3], sem_lut[4] = SemanticClass.ROAD, SemanticClass.ROAD_LINE, SemanticClass.ROAD_LINE
    return _Rig(
        hit_pixels=hit_pixels,
        hit_cells=cell[hit_pixels],
        base_code=np.concatenate(codes, 1),
        base_depth=np.concatenate(depths, 1),
        rgba_lut=np.concatenate(
            [np.minimum(rgb_lut, 235).astype(np.uint8), np.zeros((len(rgb_lut), 1), np.uint8)], 1
        )
        .view(np.uint32)
        .ravel(),
        sem_lut=sem_lut,
    )


_RIG: _Rig | None = None


def _rig() -> _Rig:
    global _RIG
    if _RIG is None:
        _RIG = _make_rig()
    return _RIG


def _box_corners(
    x: np.ndarray, y: np.ndarray, yaw: np.ndarray, extent: np.ndarray, z0: np.ndarray
) -> np.ndarray:
    """(n, 8, 3) corners of boxes standing at height z0 (0 = ground), from centres, yaws and half extents."""
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1], np.float64)
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1], np.float64)
    sz = np.array([0, 0, 0, 0, 2, 2, 2, 2], np.float64)
    lx = sx[None] * extent[:, 0:1]
    ly = sy[None] * extent[:, 1:2]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    cx = x[:, None] + c * lx - s * ly
    cy = y[:, None] + s * lx + c * ly
    cz = z0[:, None] + sz[None] * extent[:, 2:3]
    return np.stack([cx, cy, cz], axis=-1)


@dataclass
class _Solids:
    """Objects in the sensor frame, for the cameras: centres, yaws, half extents, class, colour, instance."""

    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    extent: np.ndarray  # (n, 3)
    sem: np.ndarray  # (n,) uint8
    rgb: np.ndarray  # (n, 3) uint8
    instance: np.ndarray  # (n,) int64 (actor id, or -1 for scenery)
    z0: np.ndarray  # (n,) height of the box bottom above the ground


def _render_cameras(world: _World, solids: _Solids, camera_map: np.ndarray) -> tuple[Any, ...]:
    """RGBX (384, 1152, 4) uint8, semantics (384, 1152) uint8, depth (384, 1152) float32, {id: visible px}.

    Ground pixels look up the road map through the rig's fixed ray/ground table; objects are drawn as the
    screen rectangles of their projected boxes, far to near.
    """
    rig = _rig()
    rects: list[tuple[float, int, int, int, int, int]] = []
    code = rig.base_code.copy()
    code.ravel()[rig.hit_pixels] = camera_map.ravel()[rig.hit_cells]
    sem = np.take(rig.sem_lut, code)
    rgba = np.take(rig.rgba_lut, code)  # (H, W) uint32 = 4 packed uint8 channels
    depth = rig.base_depth.copy()
    owner = np.zeros(code.shape, np.int16)  # 1 + index of the solid drawn on top, 0 = none
    num = len(solids.x)
    if num:
        corners = _box_corners(solids.x, solids.y, solids.yaw, solids.extent, solids.z0)  # (n, 8, 3)
        for cam, ((cx, cy, cz), yaw_deg) in enumerate(zip(CAMERA_POSITIONS_M, CAMERA_YAWS_DEG)):
            yaw = math.radians(yaw_deg)
            c, s = math.cos(yaw), math.sin(yaw)
            rx, ry, rz = corners[..., 0] - cx, corners[..., 1] - cy, corners[..., 2] - cz
            fwd = c * rx + s * ry
            right = -s * rx + c * ry
            front = fwd > 0.3
            safe = np.where(front, fwd, 1.0)
            # corners behind the camera push the rectangle to the image border they leave from
            u = np.where(
                front, CAMERA_FOCAL_PX * right / safe + CAMERA_WIDTH_PX / 2, np.where(right > 0, 1e4, -1e4)
            )
            v = np.where(
                front, CAMERA_FOCAL_PX * (-rz) / safe + CAMERA_HEIGHT_PX / 2, np.where(rz > 0, -1e4, 1e4)
            )
            c0 = np.clip(np.floor(u.min(1)), 0, CAMERA_WIDTH_PX).astype(int)
            c1 = np.clip(np.ceil(u.max(1)), 0, CAMERA_WIDTH_PX).astype(int)
            r0 = np.clip(np.floor(v.min(1)), 0, CAMERA_HEIGHT_PX).astype(int)
            r1 = np.clip(np.ceil(v.max(1)), 0, CAMERA_HEIGHT_PX).astype(int)
            near = np.where(front, fwd, np.inf).min(1)
            ok = front.any(1) & (c1 > c0) & (r1 > r0)
            for i in np.flatnonzero(ok):
                offset = cam * CAMERA_WIDTH_PX
                rects.append((float(near[i]), int(i), offset + c0[i], offset + c1[i], r0[i], r1[i]))
        rects.sort(key=lambda r: (-r[0], r[1]))
        rgba_solids = np.concatenate([solids.rgb, np.zeros((num, 1), np.uint8)], 1).view(np.uint32).ravel()
        for near_m, i, c0, c1, r0, r1 in rects:
            sem[r0:r1, c0:c1] = solids.sem[i]
            rgba[r0:r1, c0:c1] = rgba_solids[i]
            depth[r0:r1, c0:c1] = near_m
            owner[r0:r1, c0:c1] = i + 1
    rgba += world.texture  # per-byte noise; colours <= 235 + 17, so no carry
    rgbx = rgba.view(np.uint8).reshape(*code.shape, 4)
    if rects:
        band = owner[min(r[4] for r in rects) : max(r[5] for r in rects)]
        counts = np.bincount(band.ravel(), minlength=num + 1)[1:]
    else:
        counts = np.zeros(num, np.int64)
    visible = {
        int(solids.instance[i]): int(counts[i]) for i in np.flatnonzero(counts) if solids.instance[i] >= 0
    }
    return rgbx, sem, depth, visible


def _depth_png_array(depth_m: np.ndarray) -> np.ndarray:
    """(384, 1152) metres → (96, 288) uint8, 4x4 area mean like cv2.INTER_AREA, v = d/50*255."""
    h, w = depth_m.shape
    clipped = np.minimum(depth_m, np.float32(DEPTH_MAX_M))
    small = clipped.reshape(h // 4, 4, w).sum(1).reshape(h // 4, w // 4, 4).sum(2) * np.float32(1 / 16)
    return np.round(small / DEPTH_MAX_M * 255.0).astype(np.uint8)


def _solids(world: _World, step: int, sensor: _Sensor) -> _Solids:
    """Actors, poles and buildings visible to the cameras, in the sensor frame of `step`."""
    ex, ey, eyaw = _ego_pose(world, step)
    ax, ay, ayaw, _, extent = _actor_arrays(world, step)
    px, py = _poles(world, world.ego_u[step] - 10.0, world.ego_u[step] + 110.0)
    b_u = np.arange(math.floor((world.ego_u[step] - 10.0) / 23.0) * 23.0, world.ego_u[step] + 120.0, 23.0)
    b_u = b_u[(np.floor(b_u / 23.0) % 3) != 0] + 11.5
    b_u = np.concatenate([b_u, b_u])
    b_side = np.concatenate([np.full(len(b_u) // 2, 1.0), np.full(len(b_u) // 2, -1.0)])
    bx, by, bh = world.road.pose(b_u, b_side * (BUILDING_OFFSET_M + 5.0))
    wx = np.concatenate([ax, px, bx])
    wy = np.concatenate([ay, py, by])
    wyaw = np.concatenate([ayaw, np.zeros(len(px)), bh])
    ext = np.concatenate(
        [extent, np.tile(POLE_EXTENT_M, (len(px), 1)), np.tile(BUILDING_EXTENT_M, (len(bx), 1))]
    )
    sem = np.concatenate([[a.sem_class for a in world.actors], np.zeros(len(px) + len(bx))]).astype(np.uint8)
    rgb = np.concatenate(
        [
            np.array([a.rgb for a in world.actors]).reshape(-1, 3),
            np.tile((120, 120, 125), (len(px), 1)),
            np.tile((150, 130, 110), (len(bx), 1)),
        ]
    ).astype(np.uint8)
    instance = np.concatenate(
        [np.array([a.actor_id for a in world.actors], np.int64), np.full(len(px) + len(bx), -1, np.int64)]
    )
    z0 = np.zeros(len(wx))
    if world.light_u is not None:  # the signal head on top of the light's mast, red or green
        hx, hy, hh = world.road.pose(np.array([world.light_u + 1.0]), ROAD_HALF_WIDTH_M + 1.0)
        wx, wy, wyaw = np.append(wx, hx), np.append(wy, hy), np.append(wyaw, hh)
        ext = np.concatenate([ext, [[0.3, 0.3, 0.5]]])
        sem = np.append(sem, np.uint8(SemanticClass.TRAFFIC_LIGHT))
        head_rgb = [230, 40, 30] if world.red_light[step] else [40, 210, 60]
        rgb = np.concatenate([rgb, [head_rgb]]).astype(np.uint8)
        instance = np.append(instance, -1)
        z0 = np.append(z0, 2 * POLE_EXTENT_M[2] - 1.0)
    lx, ly = _to_frame(wx, wy, ex, ey, eyaw)
    sx, sy = sensor.from_ego(lx, ly)
    syaw = wyaw - eyaw - sensor.dyaw
    keep = (np.hypot(sx, sy) < 110.0) & (sx > -6.0)
    return _Solids(
        x=sx[keep],
        y=sy[keep],
        yaw=syaw[keep],
        extent=ext[keep],
        sem=sem[keep],
        rgb=rgb[keep],
        instance=instance[keep],
        z0=z0[keep],
    )
