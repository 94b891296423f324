"""One cached sample → a PNG for people: cameras with boxes/waypoints, LiDAR BEV, BEV semantics, text.

Layout (fixed size `PNG_WIDTH_PX` x `PNG_HEIGHT_PX` = 1152 x 704):
  row 1 (1152 x 384): the stitched camera image; boxes drawn as 3-D boxes (footprint at z = 0, top at a
        per-class height), future waypoints (cyan) and route (yellow) projected on the ground (z = 0) through
        the 3-camera pinhole rig of `constants` (FOV 60, 384 x 384 each, yaws -54.5 / 0 / 54.5, 2.25 m high);
  row 2 (3 x 384 x 320): LiDAR BEV (counts, white) with boxes and waypoints | BEV semantics (palette) |
        key scalars as text. BEV panels: x forward = to the right, y right = down, ego = red dot.
Pillow only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lead_stream.cache import features
from lead_stream.core import geometry
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    CAMERA_HEIGHT_PX,
    CAMERA_WIDTH_PX,
    LIDAR_HIST_MAX_COUNT,
    MIN_X_M,
    MIN_Y_M,
    NUM_CAMERAS,
    PIXELS_PER_M,
    BoxClass,
    BoxField,
)

PNG_WIDTH_PX = CAMERA_WIDTH_PX * NUM_CAMERAS  # 1152
PNG_HEIGHT_PX = CAMERA_HEIGHT_PX + BEV_HEIGHT_PX  # 704
BOX_COLORS = {
    BoxClass.VEHICLE: (0, 120, 255),
    BoxClass.WALKER: (255, 60, 60),
    BoxClass.TRAFFIC_LIGHT: (255, 160, 0),
    BoxClass.STOP_SIGN: (200, 0, 200),
    BoxClass.SPECIAL: (255, 255, 0),
    BoxClass.OBSTACLE: (255, 110, 0),
    BoxClass.PARKING: (0, 200, 120),
    BoxClass.BIKER: (170, 90, 255),
}
BOX_HEIGHT_M = {
    BoxClass.WALKER: 1.8,
    BoxClass.TRAFFIC_LIGHT: 3.0,
    BoxClass.STOP_SIGN: 2.0,
    BoxClass.OBSTACLE: 1.0,
    BoxClass.BIKER: 1.6,
}
DEFAULT_BOX_HEIGHT_M = 1.5
# BevSemanticClass 0..12
BEV_PALETTE = np.array(
    [
        (20, 20, 20),
        (90, 90, 90),
        (240, 240, 240),
        (200, 0, 200),
        (0, 120, 255),
        (255, 60, 60),
        (255, 110, 0),
        (0, 200, 120),
        (255, 255, 0),
        (170, 90, 255),
        (0, 220, 0),
        (255, 0, 0),
        (140, 0, 0),
    ],
    dtype=np.uint8,
)
WAYPOINT_COLOR = (0, 255, 255)
ROUTE_COLOR = (255, 230, 0)
TARGET_COLOR = (255, 0, 255)


def _box_corners_3d(box: np.ndarray) -> np.ndarray:
    """(8, 3) ego-frame corners (4 at z = 0, 4 on top) of one box row in BEV pixel units."""
    center = np.array([box[BoxField.X] / PIXELS_PER_M + MIN_X_M, box[BoxField.Y] / PIXELS_PER_M + MIN_Y_M])
    half = np.array([box[BoxField.W], box[BoxField.H]]) / PIXELS_PER_M
    footprint = geometry.box_corners(center, half, float(box[BoxField.YAW]))
    height = BOX_HEIGHT_M.get(int(box[BoxField.CLASS]), DEFAULT_BOX_HEIGHT_M)
    bottom = np.concatenate([footprint, np.zeros((4, 1))], axis=1)
    top = np.concatenate([footprint, np.full((4, 1), height)], axis=1)
    return np.concatenate([bottom, top])


BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def _draw_cameras(
    rgb: np.ndarray, boxes: np.ndarray, waypoints: np.ndarray, route: np.ndarray
) -> Image.Image:
    canvas = Image.new("RGB", (PNG_WIDTH_PX, CAMERA_HEIGHT_PX))
    for camera in range(NUM_CAMERAS):
        left = camera * CAMERA_WIDTH_PX
        view = Image.fromarray(np.ascontiguousarray(rgb[:, left : left + CAMERA_WIDTH_PX]))
        draw = ImageDraw.Draw(view)
        for box in boxes:
            uv, front = geometry.project_to_camera(_box_corners_3d(box), camera)
            color = BOX_COLORS.get(int(box[BoxField.CLASS]), (255, 255, 255))
            for a, b in BOX_EDGES:
                if front[a] and front[b]:
                    draw.line([tuple(uv[a]), tuple(uv[b])], fill=color, width=2)
        for points, color in ((route, ROUTE_COLOR), (waypoints, WAYPOINT_COLOR)):
            ground = np.concatenate([points, np.zeros((len(points), 1))], axis=1)
            uv, front = geometry.project_to_camera(ground, camera)
            for (u, v), ok in zip(uv, front, strict=True):
                if ok and -10 <= u <= CAMERA_WIDTH_PX + 10 and -10 <= v <= CAMERA_HEIGHT_PX + 10:
                    draw.ellipse([u - 3, v - 3, u + 3, v + 3], fill=color)
        canvas.paste(view, (left, 0))
    return canvas


def _bev_points(points_xy: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(p) for p in geometry.metres_to_bev_px(points_xy)]


def _draw_bev_overlays(
    image: Image.Image, boxes: np.ndarray, waypoints: np.ndarray, route: np.ndarray, target_point: np.ndarray
) -> None:
    draw = ImageDraw.Draw(image)
    for box in boxes:
        center = np.array(
            [box[BoxField.X] / PIXELS_PER_M + MIN_X_M, box[BoxField.Y] / PIXELS_PER_M + MIN_Y_M]
        )
        corners = geometry.box_corners(
            center, np.array([box[BoxField.W], box[BoxField.H]]) / PIXELS_PER_M, float(box[BoxField.YAW])
        )
        draw.polygon(_bev_points(corners), outline=BOX_COLORS.get(int(box[BoxField.CLASS]), (255, 255, 255)))
    for points, color in ((route, ROUTE_COLOR), (waypoints, WAYPOINT_COLOR)):
        for c, r in _bev_points(points):
            draw.ellipse([c - 2, r - 2, c + 2, r + 2], fill=color)
    c, r = _bev_points(target_point[None])[0]
    draw.rectangle([c - 3, r - 3, c + 3, r + 3], outline=TARGET_COLOR)
    ego_c, ego_r = _bev_points(np.zeros((1, 2)))[0]
    draw.ellipse([ego_c - 3, ego_r - 3, ego_c + 3, ego_r + 3], fill=(255, 0, 0))


def _text_panel(
    key: str, targets: dict[str, Any], variant: dict[str, Any], num_boxes: int, perturbated: bool
) -> Image.Image:
    panel = Image.new("RGB", (BEV_WIDTH_PX, BEV_HEIGHT_PX), (0, 0, 0))
    draw = ImageDraw.Draw(panel)
    route_id, _, frame = key.rpartition("/")
    scenario, _, route_dir = route_id.partition("/")
    tp = variant["target_point"]
    lines = [
        f"{scenario}",
        f"{route_dir[:60]}",
        f"frame {frame}   variant {'perturbated' if perturbated else 'normal'}",
        "",
        f"speed          {targets['speed_mps']:7.2f} m/s",
        f"target speed   {targets['target_speed_mps']:7.2f} m/s",
        f"throttle {targets['throttle']:.2f}  steer {targets['steer']:+.3f}  brake {targets['brake']}",
        f"command {targets['command']}  next_command {targets['next_command']}",
        f"planning_valid {targets['planning_valid']}",
        f"target point   ({tp[0]:6.1f}, {tp[1]:6.1f}) m",
        f"perturbation   t={targets['perturbation_translation_m']:+.2f} m  "
        f"r={targets['perturbation_rotation_deg']:+.2f} deg",
        f"boxes          {num_boxes}",
        "",
        "cyan: future waypoints  yellow: route",
        "magenta: target point   red: ego",
    ]
    for i, line in enumerate(lines):
        draw.text((8, 8 + 16 * i), line, fill=(230, 230, 230))
    return panel


def render_sample(key: str, members: dict[str, bytes], *, perturbated: bool = False) -> Image.Image:
    """Render one sample's members (as stored in a shard) to a 1152 x 704 RGB image.

    Args:
        key: the sample key (shown as text).
        members: {member name: payload} of the sample (`manifest.read_sample_members`).
        perturbated: show the perturbated variant instead of the normal one.

    Raises:
        KeyError: a needed member is missing.
    """
    suffix = "_pert" if perturbated else ""
    rgb = features.decode_member(f"rgb{suffix}.jpg", members[f"rgb{suffix}.jpg"])
    variant_name = "perturbated" if perturbated else "normal"
    sample_arrays = features.decode_member("arrays.lz4", members["arrays.lz4"])
    arrays, targets = sample_arrays[variant_name], sample_arrays[features.TARGETS_GROUP]
    lidar, bev, boxes = arrays["lidar_bev"], arrays["bev_semantic"], arrays["boxes"]
    variant = {name: arrays[name] for name in ("target_point", "future_waypoints", "route")}
    waypoints = np.asarray(variant["future_waypoints"], dtype=np.float64)
    route = np.asarray(variant["route"], dtype=np.float64)
    target_point = np.asarray(variant["target_point"], dtype=np.float64)

    image = Image.new("RGB", (PNG_WIDTH_PX, PNG_HEIGHT_PX))
    image.paste(_draw_cameras(rgb, boxes, waypoints, route), (0, 0))
    gray = (np.minimum(lidar, LIDAR_HIST_MAX_COUNT).astype(np.uint16) * 255 // LIDAR_HIST_MAX_COUNT).astype(
        np.uint8
    )
    lidar_image = Image.fromarray(np.stack([gray] * 3, axis=-1))
    _draw_bev_overlays(lidar_image, boxes, waypoints, route, target_point)
    bev_image = Image.fromarray(BEV_PALETTE[np.minimum(bev, len(BEV_PALETTE) - 1)])
    _draw_bev_overlays(bev_image, np.zeros((0, 9)), waypoints, route, target_point)
    image.paste(lidar_image, (0, CAMERA_HEIGHT_PX))
    image.paste(bev_image, (BEV_WIDTH_PX, CAMERA_HEIGHT_PX))
    text = _text_panel(key, targets, variant, len(boxes), perturbated)
    image.paste(text, (2 * BEV_WIDTH_PX, CAMERA_HEIGHT_PX))
    return image


def show_sample(
    data_root: Path, key: str, out: Path, *, pipeline_id: str | None = None, perturbated: bool = False
) -> Path:
    """Find sample `key` in the (newest) complete cache of `data_root` and write its PNG to `out`.

    Returns:
        `out`.

    Raises:
        LeadFormatError: no complete cache, a cache of another member layout, or no sample with that key.
    """
    from lead_stream.cache.manifest import read_manifest, read_sample_members, resolve_cache_dir
    from lead_stream.core.atomic import atomic_path
    from lead_stream.core.errors import LeadFormatError

    manifest = read_manifest(resolve_cache_dir(data_root, pipeline_id))
    lacking = set(features.MEMBER_NAMES) - set(manifest.members)
    if lacking:
        raise LeadFormatError(
            manifest.cache_dir / "manifest.json",
            f"samples lack members {sorted(lacking)} (built by another preprocessing version, "
            f"members {list(manifest.members)}); rebuild with lead-stream shard",
        )
    rows = manifest.samples.filter(manifest.samples["key"] == key)
    if rows.is_empty():
        examples = manifest.samples["key"][:3].to_list()
        raise LeadFormatError(
            manifest.cache_dir / "samples.parquet", f"no sample with key {key!r} (e.g. {examples})"
        )
    row = rows.row(0, named=True)
    members = read_sample_members(manifest.shard_path(row["shard"]), row["offset"], row["size_bytes"])
    image = render_sample(key, members, perturbated=perturbated)
    out = Path(out)
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG")
    return out
