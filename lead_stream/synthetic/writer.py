"""Seed → a LEAD data root on disk: routes split into frame ranges, written by a process pool.

`write_synthetic_lead` is the entry point. `_write_frames` writes one frame range of one route (every
modality, normal and perturbated); each task rebuilds the route's world, so tasks are independent and the
bytes do not depend on `workers` or `FRAMES_PER_TASK`. results.json is written last, after every frame of
every route, like LEAD's Expert.destroy; unfinished routes get none.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lead_stream.core import layout
from lead_stream.core.constants import DATA_SAVE_FREQ, HDMAP_PIXELS_PER_M
from lead_stream.synthetic.encode import _jpeg, _laz, _lzma_pickle, _npz, _png
from lead_stream.synthetic.labels import _boxes, _meta
from lead_stream.synthetic.lidar import _lidar, _radar_hits, _radar_points
from lead_stream.synthetic.poses import (
    _Sensor,
    _sensor_pose_world,
)
from lead_stream.synthetic.release import zip_routes
from lead_stream.synthetic.render import (
    CAMERA_MAP_PPM,
    CAMERA_MAP_RANGE,
    _depth_png_array,
    _render_cameras,
    _render_map,
    _solids,
)
from lead_stream.synthetic.results import _results
from lead_stream.synthetic.world import (
    USABLE_KINDS,
    _make_world,
    _route_specs,
    _RouteSpec,
)

# --- generator settings (fixed; LEAD's values where LEAD has one) ---------------------------------
LEAD_VERSIONS = ("current", "legacy")  # meta schemas: kesai-labs/lead 4489176, autonomousvision/lead 8bb1118
FRAMES_PER_TASK = 50  # at most this many frames per worker task (routes are split to balance
MIN_FRAMES_PER_TASK = 8  # processes), at least this many (each task rebuilds the route's world)


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic_lead` wrote."""

    data_root: Path
    route_ids: tuple[str, ...]  # every route written, sorted
    usable_route_ids: tuple[str, ...]  # routes LEAD's route filter keeps
    rejected_route_ids: tuple[str, ...]  # failed / collision / unfinished routes
    num_frames: int  # frames per route (saved sensor frames)
    seconds: float  # wall time of the call
    lead_version: str = "current"  # meta schema written
    zipped: bool = False  # released layout (zip/<Scenario>/<route>.zip) instead of extracted folders

    def one_line(self) -> str:
        return (
            f"{len(self.route_ids)} routes ({len(self.usable_route_ids)} usable, "
            f"{len(self.rejected_route_ids)} rejected) x {self.num_frames} frames, {self.lead_version} LEAD "
            f"schema{', zipped' if self.zipped else ''}, in {self.seconds:.1f}s -> {self.data_root}"
        )


def write_synthetic_lead(
    data_root: Path | str,
    *,
    num_routes: int = 10,
    num_frames: int = 100,
    seed: int = 0,
    num_rejected: int = 3,
    workers: int | None = None,
    lead_version: str = "current",
    zipped: bool = False,
) -> SynthSummary:
    """Write `num_routes` usable and `num_rejected` rejected synthetic routes under `<data_root>/data/`.

    Usable routes are mostly "Perfect" (score 100); the 2nd is "Completed" with only min-speed
    infractions and the 4th "Completed" with min-speed + outside-route-lanes infractions. Rejected routes
    cycle through "Failed - Agent crashed", "Completed" with a vehicle collision, and an unfinished route
    (sensor files only: no metas/, bboxes/ or results.json). Every route has `num_frames` sensor frames.

    Args:
        data_root: LEAD `carla_root` to write into (created if missing).
        num_routes: usable routes.
        num_frames: saved frames per route (4 Hz), >= 1.
        seed: all content and names derive from it; same seed → byte-identical files.
        num_rejected: rejected routes.
        workers: processes (None → os.cpu_count()); 1 writes in this process.
        lead_version: meta schema: "current" (kesai-labs/lead 4489176: dataset_information, <= 61 future
            entries, motorcycles as vehicles) or "legacy" (autonomousvision/lead 8bb1118).
        zipped: write LEAD's released layout instead: one zip per route at `zip/<Scenario>/<route>.zip`
            (members under `data/carla_leaderboard2/data/`), no extracted folders.

    Returns:
        SynthSummary with the route ids written.

    Raises:
        ValueError: a count is out of range.
    """
    if num_routes < 0 or num_rejected < 0 or num_routes + num_rejected == 0:
        raise ValueError(f"need at least one route, got num_routes={num_routes} num_rejected={num_rejected}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if lead_version not in LEAD_VERSIONS:
        raise ValueError(f"lead_version must be one of {LEAD_VERSIONS}, got {lead_version!r}")
    started = time.perf_counter()
    data_root = Path(data_root)
    specs = _route_specs(num_routes, num_frames, seed, num_rejected, lead_version)
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = max(1, workers)
    layout.routes_root(data_root).mkdir(parents=True, exist_ok=True)
    # every frame depends only on (seed, route, frame): split routes into frame ranges to balance processes
    chunk = math.ceil(len(specs) * num_frames / (4 * workers))  # ~4 tasks per process...
    chunk = min(FRAMES_PER_TASK, max(MIN_FRAMES_PER_TASK, chunk))  # ...each worth its world setup
    tasks = [
        (data_root, spec, start, min(start + chunk, num_frames))
        for spec in specs
        for start in range(0, num_frames, chunk)
    ]
    if workers == 1:
        route_lengths = [_write_frames(*task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            route_lengths = list(pool.map(_write_frames, *zip(*tasks)))
    length_of = {task[1].route_idx: length for task, length in zip(tasks, route_lengths)}
    for spec in specs:  # results.json last, like LEAD's Expert.destroy
        if spec.kind != "unfinished":
            text = json.dumps(_results(spec, length_of[spec.route_idx]), indent=2)
            route_dir = layout.route_path(data_root, spec.route_id)
            layout.results_path(route_dir).write_text(text, encoding="utf-8")
    usable = tuple(sorted(s.route_id for s in specs if s.kind in USABLE_KINDS))
    rejected = tuple(sorted(s.route_id for s in specs if s.kind not in USABLE_KINDS))
    if zipped:
        zip_routes(data_root, sorted(s.route_id for s in specs))
    return SynthSummary(
        data_root=data_root,
        route_ids=tuple(sorted(usable + rejected)),
        usable_route_ids=usable,
        rejected_route_ids=rejected,
        num_frames=num_frames,
        seconds=time.perf_counter() - started,
        lead_version=lead_version,
        zipped=zipped,
    )


def _write_frames(data_root: Path, spec: _RouteSpec, start: int, stop: int) -> float:
    """Write frames [start, stop) of a route (all modalities); returns the route length in metres."""
    world = _make_world(spec)
    route_dir = layout.route_path(data_root, spec.route_id)
    finished = spec.kind != "unfinished"
    folders = [d for d in layout.all_modality_dirnames() if finished or d not in ("metas", "bboxes")]
    for name in folders:
        (route_dir / name).mkdir(parents=True, exist_ok=True)
    creation_date = dt.date(2024, 1, 1) + dt.timedelta(days=(spec.seed * 31 + spec.route_idx) % 365)
    keypoints = [[float(x), float(y), 0.0] for x, y in zip(*world.road.pose(world.keypoint_u)[:2])]
    planner_cache: dict[int, tuple] = {}  # popped keypoints -> shared lists (pickled once per meta)
    normal = _Sensor(0.0, 0.0)
    perturbated = _Sensor(world.perturbation_translation, math.radians(world.perturbation_rotation_deg))
    for frame_idx in range(start, stop):
        step = frame_idx * DATA_SAVE_FREQ
        rng = np.random.default_rng([spec.seed, spec.route_idx, 2, frame_idx])
        visible: dict[int, int] = {}
        for sensor, pert in ((normal, False), (perturbated, True)):
            sx, sy, syaw = _sensor_pose_world(world, step, sensor)
            u = world.ego_u[step]
            hdmap = _render_map(
                world, sx, sy, syaw, (-64.0, 64.0), (-64.0, 64.0), HDMAP_PIXELS_PER_M, (u - 100.0, u + 100.0)
            )
            camera_map = _render_map(
                world,
                sx,
                sy,
                syaw,
                CAMERA_MAP_RANGE[:2],
                CAMERA_MAP_RANGE[2:],
                CAMERA_MAP_PPM,
                (u - 20.0, u + 150.0),
            )
            rgb, sem, depth, seen = _render_cameras(world, _solids(world, step, sensor), camera_map)
            if not pert:
                visible = seen
            (
                layout.modality_path(route_dir, "rgb", frame_idx, perturbated=pert).write_bytes(
                    _jpeg(rgb, world.jpeg_quality)
                )
            )
            layout.modality_path(route_dir, "semantics", frame_idx, perturbated=pert).write_bytes(_png(sem))
            layout.modality_path(route_dir, "depth", frame_idx, perturbated=pert).write_bytes(
                _png(_depth_png_array(depth))
            )
            layout.modality_path(route_dir, "hdmap", frame_idx, perturbated=pert).write_bytes(_png(hdmap))
        radar = _radar_points(world, step)
        radar_hits = _radar_hits(world, step, radar)
        radar_normal = {f"radar{i + 1}": r.astype(np.float16) for i, r in enumerate(radar)}
        radar_pert = {}
        for key, r in zip(radar_normal, radar):
            qx, qy = perturbated.from_ego(r[:, 0], r[:, 1])
            radar_pert[key] = np.stack([qx, qy, r[:, 2], r[:, 3]], axis=1).astype(np.float16).reshape(-1, 4)
        layout.modality_path(route_dir, "radar", frame_idx).write_bytes(_npz(radar_normal))
        layout.modality_path(route_dir, "radar", frame_idx, perturbated=True).write_bytes(_npz(radar_pert))
        points, hits = _lidar(world, step, rng)
        layout.modality_path(route_dir, "lidar", frame_idx).write_bytes(_laz(points, creation_date))
        if finished:
            boxes = _boxes(world, step, hits, visible, radar_hits)
            meta = _meta(world, spec, step, keypoints, planner_cache, boxes)
            layout.modality_path(route_dir, "bboxes", frame_idx).write_bytes(_lzma_pickle(boxes))
            layout.modality_path(route_dir, "metas", frame_idx).write_bytes(_lzma_pickle(meta))
    return world.route_end_u
