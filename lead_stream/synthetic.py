"""Seed → a small LEAD data root on disk, in exactly LEAD's raw layout (LEAD_FORMAT §1, §10).

`write_synthetic_lead(data_root, num_routes=..., num_frames=..., seed=...)` writes
`<data_root>/data/<Scenario>/<Town>_Rep0_<routefile>_route<i>_<MM>_<DD>_<hh>_<mm>_<ss>/` routes with
results.json, lzma-pickled metas/bboxes, JPEG/PNG cameras (normal and perturbated), LAZ LiDAR and NPZ radar.
Scenes are coherent: the ego follows a curving three-lane road at 20 Hz (a frame is saved every 5th step)
and, on long routes, stops at a red light; vehicles, walkers and parked cars move along the same road and
appear consistently in the boxes, LiDAR, radar, camera images and semantics; the HD map shows the road.
Every frame depends only on (seed, route, frame), so frame ranges are written by parallel processes and
the same seed gives byte-identical files (no wall clock anywhere). results.json is written last.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import lzma
import math
import os
import pickle
import pickletools
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lead_stream import layout
from lead_stream.constants import (
    BIKER_MESHES,
    CAMERA_FOV_DEG,
    CAMERA_HEIGHT_PX,
    CAMERA_POSITIONS_M,
    CAMERA_WIDTH_PX,
    CAMERA_YAWS_DEG,
    CARLA_FPS,
    DATA_SAVE_FREQ,
    DEPTH_MAX_M,
    HDMAP_PIXELS_PER_M,
    MAX_RADAR_POINTS_PER_SENSOR,
    MAX_X_M,
    MAX_Y_M,
    MAX_Z_M,
    MIN_X_M,
    MIN_Y_M,
    MIN_Z_M,
    NUM_CAMERAS,
    RESULT_INFRACTION_KEYS,
    SCENARIO_TYPES,
    TP_DISTANCES_M,
    SemanticClass,
)

# --- generator settings (fixed; LEAD's values where LEAD has one) ---------------------------------
DT_S = 1.0 / CARLA_FPS
EXTRA_STEPS = 60                  # simulated steps after the last saved frame (>= 61 future_positions)
MAX_FUTURE_STEPS = 200            # future_*/past_* arrays hold at most 201 entries (index 0 = now)
BOX_FUTURE_STEPS = 40             # box future_positions hold at most 41 entries
BB_SAVE_RADIUS_M = 96.0           # LEAD's bb_save_radius
LANE_WIDTH_M = 3.5               # three lanes: oncoming (y = -3.5) | ego (0) | same direction (+3.5)
ROAD_HALF_WIDTH_M = 1.5 * LANE_WIDTH_M
SIDEWALK_OFFSET_M = 7.0
POLE_OFFSET_M = 8.5
POLE_SPACING_M = 12.0
BUILDING_OFFSET_M = 17.0
EGO_EXTENT_M = (2.4508, 1.0641, 0.7553)
LIDAR_Z_SHIFT_M = -1.25           # LEAD's `z -= 1.25`: LiDAR ground is at z = -1.25 in the ego frame
RADAR_Z_SHIFT_M = -0.3
RADAR_MOUNTS = (                  # x, y, z (m), yaw (deg) of radar1..radar4
    (2.6, 0.0, 0.6, -45.0), (2.6, 0.0, 0.6, 45.0), (-2.6, 0.0, 0.6, 135.0), (-2.6, 0.0, 0.6, 225.0),
)
RADAR_RANGE_M = 100.0
RADAR_HALF_FOV_RAD = math.radians(45.0)
NUM_LIDAR_SWEEPS = 5
NUM_RADAR_SWEEPS = 10
LIDAR_SCALE_M = 0.1
LZMA_PRESET = 1                   # xz container like LEAD's lzma.open (LEAD uses preset 6; 1 is ~5x faster)
PNG_COMPRESS_LEVEL = 1            # LEAD writes level 6; any level decodes the same
ROUTE_POINT_SPACING_M = 1.0
NUM_META_ROUTE_POINTS = 50
FRAMES_PER_TASK = 50              # at most this many frames per worker task (routes are split to balance
MIN_FRAMES_PER_TASK = 8           # processes), at least this many (each task rebuilds the route's world)
RED_LIGHT_STEPS = 100             # 5 s of red light in routes long enough for one
TRAFFIC_LIGHT_ID = 90_000         # id of the route's traffic light box
TRAFFIC_LIGHT_EXTENT_M = (0.5, 1.6, 0.5)   # LEAD's traffic light box: the stop-line trigger area of the lane
UNSUFFIXED_PLANNER_M = 7.5        # min distance of the planner behind the unsuffixed next_target_points keys
HDMAP_SOLID, HDMAP_BROKEN, HDMAP_ROAD = 3, 4, 1
TOWNS = ("Town01", "Town02", "Town03", "Town04", "Town05", "Town06", "Town07", "Town10HD", "Town12", "Town13")
WEATHERS = ("ClearNoon", "CloudyNoon", "WetNoon", "ClearSunset", "Custom9", "SoftRainNoon")
CAR_BLUEPRINTS = (
    ("vehicle.tesla.model3", (2.40, 1.08, 0.76)), ("vehicle.audi.a2", (1.85, 0.90, 0.77)),
    ("vehicle.lincoln.mkz_2020", (2.45, 1.05, 0.75)), ("vehicle.mercedes.coupe_2020", (2.34, 1.00, 0.71)),
    ("vehicle.nissan.patrol_2021", (2.78, 1.07, 1.00)), ("vehicle.ford.mustang", (2.45, 1.02, 0.65)),
)
EMERGENCY_EXTENT_M = (2.65, 1.03, 0.80)
BIKE_EXTENT_M = (0.90, 0.40, 0.80)
WALKER_EXTENT_M = (0.30, 0.30, 0.90)
PARKED_EXTENT_M = (2.20, 0.95, 0.75)
POLE_EXTENT_M = (0.15, 0.15, 3.0)
BUILDING_EXTENT_M = (11.0, 5.0, 4.0)
CAMERA_FOCAL_PX = (CAMERA_WIDTH_PX / 2.0) / math.tan(math.radians(CAMERA_FOV_DEG / 2.0))
CAMERA_MAP_RANGE = (-4.0, 100.0, -64.0, 64.0)   # x_min, x_max, y_min, y_max of the BEV map behind the cameras
CAMERA_MAP_PPM = 4.0

# route kinds: results.json status and infractions (usable ones first, then rejected ones)
USABLE_KINDS = ("perfect", "min_speed", "perfect", "min_speed_outside_lanes")
REJECTED_KINDS = ("agent_crashed", "collision", "unfinished")


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic_lead` wrote."""

    data_root: Path
    route_ids: tuple[str, ...]              # every route written, sorted
    usable_route_ids: tuple[str, ...]       # routes LEAD's route filter keeps
    rejected_route_ids: tuple[str, ...]     # failed / collision / unfinished routes
    num_frames: int                         # frames per route (saved sensor frames)
    seconds: float                          # wall time of the call

    def one_line(self) -> str:
        return (f"{len(self.route_ids)} routes ({len(self.usable_route_ids)} usable, "
                f"{len(self.rejected_route_ids)} rejected) x {self.num_frames} frames in {self.seconds:.1f}s "
                f"-> {self.data_root}")


@dataclass(frozen=True)
class _RouteSpec:
    seed: int
    route_idx: int
    kind: str
    scenario: str
    town: str
    route_dir: str
    route_date_string: str
    num_frames: int

    @property
    def route_id(self) -> str:
        return f"{self.scenario}/{self.route_dir}"


def write_synthetic_lead(
    data_root: Path | str,
    *,
    num_routes: int = 10,
    num_frames: int = 100,
    seed: int = 0,
    num_rejected: int = 3,
    workers: int | None = None,
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

    Returns:
        SynthSummary with the route ids written.

    Raises:
        ValueError: a count is out of range.
    """
    if num_routes < 0 or num_rejected < 0 or num_routes + num_rejected == 0:
        raise ValueError(f"need at least one route, got num_routes={num_routes} num_rejected={num_rejected}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    started = time.perf_counter()
    data_root = Path(data_root)
    specs = _route_specs(num_routes, num_frames, seed, num_rejected)
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = max(1, workers)
    layout.routes_root(data_root).mkdir(parents=True, exist_ok=True)
    # every frame depends only on (seed, route, frame): split routes into frame ranges to balance processes
    chunk = math.ceil(len(specs) * num_frames / (4 * workers))          # ~4 tasks per process...
    chunk = min(FRAMES_PER_TASK, max(MIN_FRAMES_PER_TASK, chunk))       # ...each worth its world setup
    tasks = [(data_root, spec, start, min(start + chunk, num_frames))
             for spec in specs for start in range(0, num_frames, chunk)]
    if workers == 1:
        route_lengths = [_write_frames(*task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            route_lengths = list(pool.map(_write_frames, *zip(*tasks)))
    length_of = {task[1].route_idx: length for task, length in zip(tasks, route_lengths)}
    for spec in specs:           # results.json last, like LEAD's Expert.destroy
        if spec.kind != "unfinished":
            text = json.dumps(_results(spec, length_of[spec.route_idx]), indent=2)
            route_dir = layout.route_path(data_root, spec.route_id)
            layout.results_path(route_dir).write_text(text, encoding="utf-8")
    usable = tuple(sorted(s.route_id for s in specs if s.kind in USABLE_KINDS))
    rejected = tuple(sorted(s.route_id for s in specs if s.kind not in USABLE_KINDS))
    return SynthSummary(data_root=data_root, route_ids=tuple(sorted(usable + rejected)),
                        usable_route_ids=usable, rejected_route_ids=rejected, num_frames=num_frames,
                        seconds=time.perf_counter() - started)


def _route_specs(num_routes: int, num_frames: int, seed: int, num_rejected: int) -> list[_RouteSpec]:
    rng = np.random.default_rng([seed, 0x5EED])
    kinds = [USABLE_KINDS[i] if i < len(USABLE_KINDS) else "perfect" for i in range(num_routes)]
    kinds += [REJECTED_KINDS[i % len(REJECTED_KINDS)] for i in range(num_rejected)]
    scenarios = [s for s in SCENARIO_TYPES if s != "NA"]
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    clock_s = int(rng.integers(0, 20 * 3600))
    specs = []
    for route_idx, kind in enumerate(kinds):
        clock_s += int(rng.integers(60, 900))           # routes start minutes apart, like a real collection
        hh, mm, ss = clock_s // 3600 % 24, clock_s // 60 % 60, clock_s % 60
        routefile = f"route_{int(rng.integers(0, 10**6)):06d}"
        date = "_".join(f"{v:02d}" for v in (month, day, hh, mm, ss))
        route_date_string = f"{routefile}_route{route_idx}_{date}"
        town = TOWNS[int(rng.integers(len(TOWNS)))]
        scenario = scenarios[int(rng.integers(len(scenarios)))]
        specs.append(_RouteSpec(seed=seed, route_idx=route_idx, kind=kind, scenario=scenario, town=town,
                                route_dir=f"{town}_Rep0_{route_date_string}",
                                route_date_string=route_date_string, num_frames=num_frames))
    return specs


# ================================================================================================
# world: road, ego motion, actors
# ================================================================================================
def _wrap(angle: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


@dataclass
class _Road:
    """A centreline parametrised by arc length u (metres), world frame (x fwd, y right, yaw towards +y)."""

    u: np.ndarray          # (M,) arc-length grid
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray    # unwrapped yaw (rad)

    def pose(self, u: np.ndarray, offset: np.ndarray | float = 0.0) -> tuple[np.ndarray, ...]:
        """World (x, y, heading) at arc length u, `offset` metres to the right of the centreline."""
        h = np.interp(u, self.u, self.heading)
        x = np.interp(u, self.u, self.x) - np.sin(h) * offset
        y = np.interp(u, self.u, self.y) + np.cos(h) * offset
        return x, y, h


def _make_road(rng: np.random.Generator, u_min: float, u_max: float) -> _Road:
    du = 0.5
    u = np.arange(u_min, u_max + du, du)
    curvature = np.zeros_like(u)
    for _ in range(2):   # two sinusoids; heading swing per half period <= ~0.6 rad so the road never loops
        period = rng.uniform(90.0, 260.0)
        amplitude = rng.uniform(0.2, 0.6) * math.pi / period
        curvature += amplitude * np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
    heading = np.concatenate([[0.0], np.cumsum(0.5 * (curvature[1:] + curvature[:-1]) * du)])
    heading += rng.uniform(-math.pi, math.pi) - np.interp(0.0, u, heading)
    x = np.concatenate([[0.0], np.cumsum(np.cos(0.5 * (heading[1:] + heading[:-1])) * du)])
    y = np.concatenate([[0.0], np.cumsum(np.sin(0.5 * (heading[1:] + heading[:-1])) * du)])
    x += rng.uniform(-300, 300) - np.interp(0.0, u, x)
    y += rng.uniform(-300, 300) - np.interp(0.0, u, y)
    return _Road(u=u, x=x, y=y, heading=heading)


@dataclass
class _Actor:
    actor_id: int
    box_class: str          # "car", "walker", "static_prop_car", "pole"
    extent: tuple[float, float, float]
    type_id: str
    sem_class: int           # TransFuser semantic id used for camera pixels
    rgb: tuple[int, int, int]
    x: np.ndarray            # (num_steps,) world positions, yaw and forward speed per 20 Hz step
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    lane_offset: float = 0.0


@dataclass
class _World:
    road: _Road
    ego_u: np.ndarray        # (num_steps,) arc length of the ego
    ego_x: np.ndarray
    ego_y: np.ndarray
    ego_yaw: np.ndarray      # unwrapped
    ego_speed: np.ndarray
    target_speed: np.ndarray
    brake: np.ndarray        # bool
    throttle: np.ndarray
    steer: np.ndarray
    red_light: np.ndarray    # bool: a red light holds the ego
    light_u: float | None    # arc length of the stop line of the route's traffic light (None: no light)
    actors: list[_Actor]
    keypoint_u: np.ndarray   # sparse route keypoints (arc length)
    keypoint_commands: list[int]
    route_end_u: float
    perturbation_translation: float
    perturbation_rotation_deg: float
    jpeg_quality: int
    weather: str
    stream_seed: tuple[int, int]   # (seed, route_idx): per-step random streams derive from it
    texture: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    radar_cache: dict[int, list[np.ndarray]] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        def stack(attr: str) -> np.ndarray:
            return np.array([getattr(a, attr) for a in self.actors], np.float64).reshape(len(self.actors), -1)

        self.actor_x, self.actor_y = stack("x"), stack("y")            # (num_actors, num_steps)
        self.actor_yaw, self.actor_speed = stack("yaw"), stack("speed")
        self.actor_extent = np.array([a.extent for a in self.actors], np.float64).reshape(-1, 3)


def _make_world(spec: _RouteSpec) -> _World:
    rng = np.random.default_rng([spec.seed, spec.route_idx, 1])
    num_steps = (spec.num_frames - 1) * DATA_SAVE_FREQ + 1 + EXTRA_STEPS
    cruise = rng.uniform(6.0, 12.0)
    target = np.full(num_steps, cruise)
    red_light = np.zeros(num_steps, bool)
    if num_steps > 200 and rng.random() < 0.6:        # a red light: stop for ~5 s somewhere in the middle
        stop_at = int(rng.uniform(0.3, 0.6) * num_steps)
        red_light[stop_at:stop_at + RED_LIGHT_STEPS] = True
        target[red_light] = 0.0
    speed = np.zeros(num_steps)
    speed[0] = 0.0 if rng.random() < 0.5 else cruise * rng.uniform(0.5, 1.0)
    for k in range(1, num_steps):
        speed[k] = speed[k - 1] + np.clip(target[k - 1] - speed[k - 1], -5.0 * DT_S, 2.5 * DT_S)
    speed = np.maximum(speed, 0.0)
    ego_u = np.concatenate([[0.0], np.cumsum(speed[:-1] * DT_S)])
    # the traffic light's stop line lies just ahead of where the ego comes to rest
    light_u = float(ego_u[np.flatnonzero(red_light)[-1]] + 3.0) if red_light.any() else None
    route_end_u = float(ego_u[-1] + 20.0)
    road = _make_road(rng, -120.0, route_end_u + 160.0)
    ego_x, ego_y, ego_yaw = road.pose(ego_u)
    curvature = np.gradient(ego_yaw, ego_u + 1e-6 * np.arange(num_steps))   # dθ/du
    steer = np.clip(np.arctan(2.9 * curvature) / 1.22, -1.0, 1.0)
    brake = (target < speed - 0.5) | (target == 0.0)
    throttle = np.where(brake, 0.0, np.clip(0.3 + 0.4 * (target - speed), 0.0, 0.75))

    # sparse route keypoints every 25..50 m, plus the route end
    kp = [0.0]
    while kp[-1] + 25.0 < route_end_u:
        kp.append(min(kp[-1] + rng.uniform(25.0, 50.0), route_end_u))
    if kp[-1] < route_end_u:
        kp.append(route_end_u)
    keypoint_u = np.array(kp)
    kp_heading = np.interp(keypoint_u, road.u, road.heading)
    commands = [4]
    for i in range(1, len(kp)):
        turn = kp_heading[i] - kp_heading[i - 1]
        commands.append(2 if turn > 0.35 else 1 if turn < -0.35 else 4)

    actors = _make_actors(rng, road, ego_u, num_steps, cruise, route_end_u)
    translation = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 1.0))
    rotation = 0.0
    while abs(rotation) < 0.5:
        rotation = float(rng.uniform(-12.5, 12.5))
    texture = rng.integers(0, 18, size=(CAMERA_HEIGHT_PX, CAMERA_WIDTH_PX * NUM_CAMERAS, 4), dtype=np.uint8)
    texture[..., 3] = 0
    texture = texture.view(np.uint32)[..., 0]      # (H, W) packed RGBX noise, added to the packed image
    return _World(road=road, ego_u=ego_u, ego_x=ego_x, ego_y=ego_y, ego_yaw=ego_yaw, ego_speed=speed,
                  target_speed=target, brake=brake, throttle=throttle, steer=steer, red_light=red_light,
                  light_u=light_u,
                  actors=actors, keypoint_u=keypoint_u, keypoint_commands=commands, route_end_u=route_end_u,
                  perturbation_translation=translation, perturbation_rotation_deg=rotation,
                  jpeg_quality=int(rng.choice([30, 90])), weather=WEATHERS[int(rng.integers(len(WEATHERS)))],
                  stream_seed=(spec.seed, spec.route_idx), texture=texture)


def _make_actors(rng: np.random.Generator, road: _Road, ego_u: np.ndarray, num_steps: int, cruise: float,
                 route_end_u: float) -> list[_Actor]:
    t = np.arange(num_steps) * DT_S
    actors: list[_Actor] = []
    next_id = int(rng.integers(200, 400))

    def add(box_class: str, extent: tuple, type_id: str, sem: int, colour: tuple, u: np.ndarray,
            offset: float, backwards: bool, speed: float) -> None:
        nonlocal next_id
        x, y, h = road.pose(u, offset)
        yaw = h + math.pi if backwards else h
        actor_id = next_id if box_class != "static_prop_car" else 100_000_000 + next_id
        actors.append(_Actor(actor_id=actor_id, box_class=box_class, extent=extent, type_id=type_id,
                             sem_class=sem, rgb=colour, x=x, y=y, yaw=yaw, speed=np.full(num_steps, speed),
                             lane_offset=offset))
        next_id += int(rng.integers(1, 40))

    def colour() -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(30, 225, size=3))

    def vehicle() -> tuple[str, tuple, int]:
        roll = rng.random()
        if roll < 0.1:
            return BIKER_MESHES[int(rng.integers(len(BIKER_MESHES)))], BIKE_EXTENT_M, SemanticClass.BIKER
        if roll < 0.15:
            return "vehicle.ford.ambulance", EMERGENCY_EXTENT_M, SemanticClass.SPECIAL_VEHICLE
        type_id, extent = CAR_BLUEPRINTS[int(rng.integers(len(CAR_BLUEPRINTS)))]
        return type_id, extent, SemanticClass.VEHICLE

    span = route_end_u + 120.0
    # a lead vehicle in the ego lane, slightly faster than the ego's cruise speed (it never gets hit)
    type_id, extent, sem = vehicle()
    v = cruise * rng.uniform(1.15, 1.35)
    add("car", extent, type_id, sem, colour(), rng.uniform(14.0, 30.0) + v * t, 0.0, False, v)
    # right-lane traffic (same direction) and oncoming traffic, spread along the route
    for u0 in np.arange(rng.uniform(-40.0, 0.0), span, rng.uniform(45.0, 70.0)):
        type_id, extent, sem = vehicle()
        v = rng.uniform(3.0, 11.0)
        add("car", extent, type_id, sem, colour(), u0 + rng.uniform(-10, 10) + v * t, LANE_WIDTH_M, False, v)
    for u0 in np.arange(rng.uniform(20.0, 60.0), span + 200.0, rng.uniform(50.0, 80.0)):
        type_id, extent, sem = vehicle()
        v = rng.uniform(5.0, 12.0)
        add("car", extent, type_id, sem, colour(), u0 - v * t, -LANE_WIDTH_M, True, v)
    # walkers on the sidewalks and cars parked on the right shoulder
    for u0 in np.arange(rng.uniform(0.0, 30.0), span, rng.uniform(35.0, 60.0)):
        v = rng.uniform(0.8, 1.6)
        back = bool(rng.random() < 0.5)
        side = SIDEWALK_OFFSET_M * (1 if rng.random() < 0.6 else -1)
        add("walker", WALKER_EXTENT_M, "walker.pedestrian.0001", SemanticClass.PEDESTRIAN, colour(),
            u0 + (-v if back else v) * t, side, back, v)
    for u0 in np.arange(rng.uniform(10.0, 60.0), span, rng.uniform(60.0, 110.0)):
        add("static_prop_car", PARKED_EXTENT_M, "static.prop.car", SemanticClass.VEHICLE, colour(),
            np.full(num_steps, u0), LANE_WIDTH_M * 1.5 + 1.4, False, 0.0)
    return actors


# ================================================================================================
# frames: poses and transforms
# ================================================================================================
def _to_frame(px: np.ndarray, py: np.ndarray, ox: float, oy: float, oyaw: float) -> tuple[np.ndarray, ...]:
    """World points → the frame at (ox, oy) with yaw oyaw: R(yaw)^T (p - o)."""
    c, s = math.cos(oyaw), math.sin(oyaw)
    dx, dy = px - ox, py - oy
    return c * dx + s * dy, -s * dx + c * dy


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
# rendering
# ================================================================================================
def _render_map(world: _World, ox: float, oy: float, oyaw: float, x_range: tuple[float, float],
                y_range: tuple[float, float], ppm: float, u_window: tuple[float, float]) -> np.ndarray:
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
    dash_starts = np.arange(math.floor(lo / 9.0) * 9.0, hi, 9.0)      # 3 m dashes every 9 m
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

    hit_pixels: np.ndarray    # (n,) flat pixel indices whose ground hit lies inside the camera map
    hit_cells: np.ndarray     # (n,) flat camera-map cells they hit
    base_code: np.ndarray     # (H, W) uint8
    base_depth: np.ndarray    # (H, W) float32 camera z-depth of the ground hit, 1000 for sky
    rgba_lut: np.ndarray      # (num_codes,) uint32: RGB + 0 packed, for one-lookup colouring
    sem_lut: np.ndarray       # (num_codes,) uint8


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
    rgb_lut = np.array([[96, 112, 84], [70, 70, 74], [0, 0, 0], [225, 225, 225], [215, 205, 140]] + sky_rgb,
                       np.float64)
    sem_lut = np.zeros(len(rgb_lut), np.uint8)
    sem_lut[1], sem_lut[3], sem_lut[4] = SemanticClass.ROAD, SemanticClass.ROAD_LINE, SemanticClass.ROAD_LINE
    return _Rig(hit_pixels=hit_pixels, hit_cells=cell[hit_pixels], base_code=np.concatenate(codes, 1),
                base_depth=np.concatenate(depths, 1),
                rgba_lut=np.concatenate([np.minimum(rgb_lut, 235).astype(np.uint8),
                                         np.zeros((len(rgb_lut), 1), np.uint8)], 1).view(np.uint32).ravel(),
                sem_lut=sem_lut)


_RIG: _Rig | None = None


def _rig() -> _Rig:
    global _RIG
    if _RIG is None:
        _RIG = _make_rig()
    return _RIG


def _box_corners(x: np.ndarray, y: np.ndarray, yaw: np.ndarray, extent: np.ndarray,
                 z0: np.ndarray) -> np.ndarray:
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
    extent: np.ndarray       # (n, 3)
    sem: np.ndarray          # (n,) uint8
    rgb: np.ndarray          # (n, 3) uint8
    instance: np.ndarray     # (n,) int64 (actor id, or -1 for scenery)
    z0: np.ndarray           # (n,) height of the box bottom above the ground


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
    rgba = np.take(rig.rgba_lut, code)            # (H, W) uint32 = 4 packed uint8 channels
    depth = rig.base_depth.copy()
    owner = np.zeros(code.shape, np.int16)        # 1 + index of the solid drawn on top, 0 = none
    num = len(solids.x)
    if num:
        corners = _box_corners(solids.x, solids.y, solids.yaw, solids.extent, solids.z0)     # (n, 8, 3)
        for cam, ((cx, cy, cz), yaw_deg) in enumerate(zip(CAMERA_POSITIONS_M, CAMERA_YAWS_DEG)):
            yaw = math.radians(yaw_deg)
            c, s = math.cos(yaw), math.sin(yaw)
            rx, ry, rz = corners[..., 0] - cx, corners[..., 1] - cy, corners[..., 2] - cz
            fwd = c * rx + s * ry
            right = -s * rx + c * ry
            front = fwd > 0.3
            safe = np.where(front, fwd, 1.0)
            # corners behind the camera push the rectangle to the image border they leave from
            u = np.where(front, CAMERA_FOCAL_PX * right / safe + CAMERA_WIDTH_PX / 2,
                         np.where(right > 0, 1e4, -1e4))
            v = np.where(front, CAMERA_FOCAL_PX * (-rz) / safe + CAMERA_HEIGHT_PX / 2,
                         np.where(rz > 0, -1e4, 1e4))
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
    rgba += world.texture                          # per-byte noise; colours <= 235 + 17, so no carry
    rgbx = rgba.view(np.uint8).reshape(*code.shape, 4)
    if rects:
        band = owner[min(r[4] for r in rects):max(r[5] for r in rects)]
        counts = np.bincount(band.ravel(), minlength=num + 1)[1:]
    else:
        counts = np.zeros(num, np.int64)
    visible = {int(solids.instance[i]): int(counts[i])
               for i in np.flatnonzero(counts) if solids.instance[i] >= 0}
    return rgbx, sem, depth, visible


def _depth_png_array(depth_m: np.ndarray) -> np.ndarray:
    """(384, 1152) metres → (96, 288) uint8, 4x4 area mean like cv2.INTER_AREA, v = d/50*255."""
    h, w = depth_m.shape
    clipped = np.minimum(depth_m, np.float32(DEPTH_MAX_M))
    small = clipped.reshape(h // 4, 4, w).sum(1).reshape(h // 4, w // 4, 4).sum(2) * np.float32(1 / 16)
    return np.round(small / DEPTH_MAX_M * 255.0).astype(np.uint8)


# ================================================================================================
# encoders (deterministic bytes)
# ================================================================================================
def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _jpeg(rgbx: np.ndarray, quality: int) -> bytes:
    """(H, W, 4) RGBX uint8 → an ordinary 3-channel JPEG (4:2:0, like cv2.imwrite)."""
    import simplejpeg

    return simplejpeg.encode_jpeg(rgbx, quality=quality, colorspace="RGBX", colorsubsampling="420")


_NUMPY2_MODULE_PREFIX = "numpy._core"


def _numpy1_globals(payload: bytes) -> bytes:
    """Rename numpy 2's pickle globals `numpy._core.*` to numpy 1.x's `numpy.core.*` (unframed result).

    LEAD pins numpy 1.26.0, which has no `numpy._core` package, so a pickle written under numpy 2
    (`numpy._core.numeric._frombuffer`, `numpy._core.multiarray.scalar` / `_reconstruct`) fails there with
    ModuleNotFoundError. LEAD's real files, written under numpy 1.26, reference `numpy.core.*`, which numpy 2
    still resolves (through its `numpy.core` shim). Only SHORT_BINUNICODE/BINUNICODE strings that start
    with `numpy._core` are rewritten: in our metas and boxes those are always the module names that
    STACK_GLOBAL consumes. FRAME opcodes are dropped (their lengths change); the caller re-frames.
    """
    if _NUMPY2_MODULE_PREFIX.encode() not in payload:
        return payload
    out: list[bytes] = []
    ops = list(pickletools.genops(payload))
    for (op, arg, pos), nxt in zip(ops, [o[2] for o in ops[1:]] + [len(payload)]):
        if op.name == "FRAME":
            continue
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE") and isinstance(arg, str) \
                and arg.startswith(_NUMPY2_MODULE_PREFIX):
            text = ("numpy.core" + arg[len(_NUMPY2_MODULE_PREFIX):]).encode("utf-8")
            out.append(b"\x8c" + bytes([len(text)]) + text if len(text) < 256
                       else b"X" + len(text).to_bytes(4, "little") + text)
            continue
        out.append(payload[pos:nxt])
    return b"".join(out)


def _lzma_pickle(obj: Any) -> bytes:
    """LEAD's write_pickle: protocol 5, pickletools.optimize, xz container; loadable under numpy 1.26.

    Numpy globals are written with numpy 1.x names (`_numpy1_globals`) whatever numpy runs the generator,
    and `pickletools.optimize` (as LEAD does) drops unused memo puts and re-frames the stream.
    """
    payload = pickletools.optimize(_numpy1_globals(pickle.dumps(obj, protocol=5)))
    return lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=LZMA_PRESET)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed layout with a fixed zip timestamp (numpy stamps the wall clock)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _laz(points: np.ndarray, creation_date: dt.date) -> bytes:
    """LEAD's LiDAR file: point format 0, scale 0.1 m, offset = min xyz, extra uint8 dimension `time`."""
    import laspy

    header = laspy.LasHeader(point_format=0)
    header.offsets = np.min(points[:, :3], axis=0) if len(points) else np.zeros(3)
    header.scales = np.array([LIDAR_SCALE_M] * 3)
    header.add_extra_dim(laspy.ExtraBytesParams(name="time", type=np.uint8))
    header.creation_date = creation_date
    buffer = io.BytesIO()
    with laspy.open(buffer, mode="w", header=header, do_compress=True, closefd=False,
                    laz_backend=laspy.LazBackend.Lazrs) as writer:
        record = laspy.ScaleAwarePointRecord.zeros(points.shape[0], header=header)
        record.x = points[:, 0]
        record.y = points[:, 1]
        record.z = points[:, 2]
        record["time"] = points[:, 3].astype(np.uint8)
        writer.write_points(record)
    return buffer.getvalue()


# ================================================================================================
# per-step scene queries
# ================================================================================================
def _ego_pose(world: _World, step: int) -> tuple[float, float, float]:
    return float(world.ego_x[step]), float(world.ego_y[step]), float(world.ego_yaw[step])


def _actor_arrays(world: _World, step: int) -> tuple[np.ndarray, ...]:
    """World x, y, yaw, speed, extents (n, 3) of all actors at `step`."""
    return (world.actor_x[:, step], world.actor_y[:, step], world.actor_yaw[:, step],
            world.actor_speed[:, step], world.actor_extent)


def _poles(world: _World, u_lo: float, u_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """World positions of the street-light poles with arc length in [u_lo, u_hi] (both road sides)."""
    first = math.ceil(u_lo / POLE_SPACING_M) * POLE_SPACING_M
    u = np.arange(first, u_hi, POLE_SPACING_M)
    u = np.concatenate([u, u + POLE_SPACING_M / 2])
    side = np.repeat([POLE_OFFSET_M, -POLE_OFFSET_M], len(u) // 2)
    if world.light_u is not None and u_lo <= world.light_u <= u_hi:   # the traffic light's mast
        u = np.append(u, world.light_u + 1.0)
        side = np.append(side, ROAD_HALF_WIDTH_M + 1.0)
    x, y, _ = world.road.pose(u, side)
    return x, y


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
        idx = np.repeat(seen, counts)                  # one row per radar return, nearest targets first
        idx = idx[np.argsort(dist[idx], kind="stable")][:MAX_RADAR_POINTS_PER_SENSOR]
        unit_x, unit_y = dx[idx] / dist[idx], dy[idx] / dist[idx]
        jitter = rng.uniform(-1.0, 1.0, len(idx)) * size[idx]
        points = np.stack([lx[idx] - unit_x * size[idx] - unit_y * jitter,    # on the face towards the radar
                           ly[idx] - unit_y * size[idx] + unit_x * jitter,
                           rng.uniform(0.2, 1.2, len(idx)) + RADAR_Z_SHIFT_M,
                           lvx[idx] * unit_x + lvy[idx] * unit_y], axis=1)     # radial velocity, + = receding
        sensors.append(points)
    return sensors


def _surface_points(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, yaw: np.ndarray,
                    extent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR hits (n, 3) on the box sides facing the sensor at the origin, and the box index of each hit.

    Boxes stand on the ground (z = 0); hits per face fall off with the squared distance like a real scan.
    """
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    sign = np.array([1.0, -1.0, 0.0, 0.0])[None]           # faces: front, back, right, left
    side = np.array([0.0, 0.0, 1.0, -1.0])[None]
    fx, fy = sign * extent[:, 0:1], side * extent[:, 1:2]  # face centres in the box frame
    cx, cy = x[:, None] + c * fx - s * fy, y[:, None] + s * fx + c * fy
    nx, ny = c * sign - s * side, s * sign + c * side       # outward normals
    length = np.where(sign != 0, 2 * extent[:, 1:2], 2 * extent[:, 0:1])
    height = np.broadcast_to(2 * extent[:, 2:3], length.shape)
    density = np.clip(600.0 / np.maximum(np.hypot(x, y), 1.0) ** 2, 0.3, 60.0)[:, None]   # hits per m^2
    counts = np.where(nx * cx + ny * cy < 0, np.minimum(density * length * height, 300), 0).astype(int)
    face = np.repeat(np.arange(counts.size), counts.ravel())
    along = rng.uniform(-0.5, 0.5, len(face)) * length.ravel()[face]
    cx, cy, nx, ny = (a.ravel()[face] for a in (cx, cy, nx, ny))
    points = np.stack([cx - ny * along, cy + nx * along,
                       rng.uniform(0.0, 1.0, len(face)) * height.ravel()[face]], axis=1)
    return points, face // 4


def _lidar(world: _World, step: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Accumulated (N, 4) [x, y, z, time] LiDAR of `step` (ego frame) and per-actor hits of sweep 0."""
    ex, ey, eyaw = _ego_pose(world, step)
    chunks = []
    owners = []     # per chunk: actor index for the current sweep's actor points (num_points), else -1

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
        pts = np.stack([(plx[:, None] + 0.15 * np.cos(ang)).ravel(),
                        (ply[:, None] + 0.15 * np.sin(ang)).ravel(),
                        rng.uniform(0.0, 6.0, len(plx) * n_per)], axis=1)
        add(pts, age)
        # building facades along both sides of the road
        u = rng.uniform(world.ego_u[step] + MIN_X_M - 10, world.ego_u[step] + MAX_X_M + 10, 1200)
        side = np.where(rng.random(1200) < 0.5, -BUILDING_OFFSET_M, BUILDING_OFFSET_M)
        wx, wy, _ = world.road.pose(u, side)
        wlx, wly = _to_frame(wx, wy, ex, ey, eyaw)
        gap = (np.floor(u / 23.0) % 3) == 0          # every third 23 m block is an open lot
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
    keep = ((points[:, 0] >= MIN_X_M) & (points[:, 0] < MAX_X_M) & (points[:, 1] >= MIN_Y_M)
            & (points[:, 1] < MAX_Y_M) & (points[:, 2] >= MIN_Z_M) & (points[:, 2] < MAX_Z_M)
            & ~((np.abs(points[:, 0]) < EGO_EXTENT_M[0]) & (np.abs(points[:, 1]) < EGO_EXTENT_M[1])))
    hits = np.bincount(owner[keep] + 1, minlength=len(world.actors) + 1)[1:]
    return points[keep], hits


def _from_frame(lx: np.ndarray, ly: np.ndarray, ox: float, oy: float, oyaw: float) -> tuple[np.ndarray, ...]:
    """Points of the frame at (ox, oy, oyaw) → world: o + R(yaw) p."""
    c, s = math.cos(oyaw), math.sin(oyaw)
    return ox + c * lx - s * ly, oy + s * lx + c * ly


# ================================================================================================
# per-frame records
# ================================================================================================
def _future_track(xs: np.ndarray, ys: np.ndarray, yaws: np.ndarray, step: int, horizon: int,
                  ox: float, oy: float, oyaw: float) -> tuple[np.ndarray, np.ndarray]:
    end = min(step + horizon + 1, len(xs))
    fx, fy = _to_frame(xs[step:end], ys[step:end], ox, oy, oyaw)
    return np.stack([fx, fy], axis=1), _wrap(yaws[step:end] - oyaw)


def _boxes(world: _World, step: int, hits: np.ndarray, visible: dict[int, int], radar_hits: dict[int, int]
           ) -> list[dict]:
    ex, ey, eyaw = _ego_pose(world, step)
    speed = float(world.ego_speed[step])
    ego = {
        "class": "ego_car", "extent": list(EGO_EXTENT_M), "position": [0.0, 0.0, 0.0], "yaw": 0.0,
        "distance": 0.0, "speed": speed, "brake": bool(world.brake[step]), "id": 1,
        "matrix": _ego_matrix(ex, ey, eyaw).astype(np.float64).tolist(), "num_points": -1,
        "visible_pixels": -1, "transfuser_semantics_id": 0,
    }
    others = []
    for i, actor in enumerate(world.actors):
        lx, ly = _to_frame(actor.x[step], actor.y[step], ex, ey, eyaw)
        distance = float(math.hypot(lx, ly))
        if distance > BB_SAVE_RADIUS_M:
            continue
        box: dict[str, Any] = {
            "class": actor.box_class, "extent": list(actor.extent), "position": [float(lx), float(ly), 0.0],
            "yaw": float(_wrap(actor.yaw[step] - eyaw)), "distance": distance, "id": actor.actor_id,
            "matrix": _ego_matrix(float(actor.x[step]), float(actor.y[step]), float(actor.yaw[step]))
            .astype(np.float64).tolist(),
            "num_points": int(hits[i]), "visible_pixels": int(visible.get(actor.actor_id, 0)),
        }
        if actor.box_class == "static_prop_car":
            box["transfuser_semantics_id"] = int(SemanticClass.VEHICLE)
        else:
            future_xy, future_yaw = _future_track(actor.x, actor.y, actor.yaw, step, BOX_FUTURE_STEPS,
                                                  ex, ey, eyaw)
            v = float(actor.speed[step])
            box.update({
                "speed": v, "num_radar_points": int(radar_hits.get(actor.actor_id, 0)),
                "role_name": "background",
                "ego_velocity": [v * math.cos(box["yaw"]) - speed, v * math.sin(box["yaw"]), 0.0],
                "future_positions": future_xy.astype(np.float16),
                "future_yaws": future_yaw.astype(np.float16),
            })
            if actor.box_class == "car":
                box.update({
                    "brake": 0.0, "steer": 0.0, "throttle": 0.5,
                    "transfuser_semantics_id": int(actor.sem_class), "type_id": actor.type_id,
                    "base_type": "bicycle" if actor.type_id in BIKER_MESHES else "car",
                    "lane_type_str": "Driving", "road_id": 7, "lane_id": -1 if actor.lane_offset >= 0 else 1,
                    "speed_limit": 13.89, "next_action": "LaneFollow", "vehicle_cuts_in": False,
                })
            else:
                box["transfuser_semantics_id"] = int(SemanticClass.PEDESTRIAN)
        others.append(box)
    if world.light_u is not None:     # LEAD saves only lights that affect the ego, i.e. ahead of it
        wx, wy, wh = world.road.pose(np.array([world.light_u]))
        lx, ly = _to_frame(wx, wy, ex, ey, eyaw)
        distance = float(math.hypot(lx[0], ly[0]))
        if lx[0] > 0 and distance <= BB_SAVE_RADIUS_M:
            others.append({
                "class": "traffic_light", "extent": list(TRAFFIC_LIGHT_EXTENT_M),
                "position": [float(lx[0]), float(ly[0]), 0.0], "yaw": float(_wrap(wh[0] - eyaw)),
                "distance": distance, "id": TRAFFIC_LIGHT_ID,
                "matrix": _ego_matrix(float(wx[0]), float(wy[0]), float(wh[0])).astype(np.float64).tolist(),
                "state": "Red" if world.red_light[step] else "Green", "affects_ego": True,
                "same_lane_as_ego": True, "is_over_head_traffic_light": False,
                "is_europe_traffic_light": False,
                "distance_to_physical_traffic_light": float(math.hypot(1.0, ROAD_HALF_WIDTH_M + 1.0)),
                "dummy_traffic_light_bounding_box": False,
                "transfuser_semantics_id": int(SemanticClass.TRAFFIC_LIGHT),
            })
    others.sort(key=lambda b: (b["distance"], b["id"]))
    return [ego] + others


def _planner_lists(world: _World, step: int, cache: dict[int, tuple[list, list, list, list]],
                   keypoints: list[list[float]], pop_distance: float) -> tuple[list, list, list, list]:
    """LEAD RoutePlanner state: keypoints that came within `pop_distance` are popped (first stays behind)."""
    u = world.ego_u[step]
    popped = int(np.searchsorted(world.keypoint_u - pop_distance, u, side="right")) - 1
    popped = int(np.clip(popped, 0, len(keypoints) - 2))
    if popped not in cache:   # shared list objects → pickle memoises them (small metas)
        cache[popped] = (keypoints[popped:], world.keypoint_commands[popped:], keypoints[:popped],
                         world.keypoint_commands[:popped])
    return cache[popped]


def _meta(world: _World, spec: _RouteSpec, step: int, keypoints: list[list[float]],
          planner_cache: dict[int, tuple], boxes: list[dict]) -> dict[str, Any]:
    ex, ey, eyaw = _ego_pose(world, step)
    speed = float(world.ego_speed[step])
    future_xy, future_yaw = _future_track(world.ego_x, world.ego_y, world.ego_yaw, step, MAX_FUTURE_STEPS,
                                          ex, ey, eyaw)
    future_positions = np.concatenate([future_xy, np.zeros((len(future_xy), 1))], axis=1).astype(np.float32)
    past_idx = np.arange(step, max(step - MAX_FUTURE_STEPS, 0) - 1, -1)
    px, py = _to_frame(world.ego_x[past_idx], world.ego_y[past_idx], ex, ey, eyaw)
    past_positions = np.stack([px, py], axis=1).astype(np.float32)
    route_u = np.arange(world.ego_u[step] + 2.5, world.route_end_u, ROUTE_POINT_SPACING_M)
    route_u = route_u[:NUM_META_ROUTE_POINTS]
    rx, ry, _ = world.road.pose(route_u)
    route = np.stack(_to_frame(rx, ry, ex, ey, eyaw), axis=1).astype(np.float32)
    ahead = np.linspace(world.ego_u[step], world.ego_u[step] + 50.0, 51)
    heading_ahead = np.interp(ahead, world.road.u, world.road.heading)
    route_curvature = float(np.abs(np.diff(heading_ahead)).sum())
    prev_step = max(step - 1, 0)
    accel = (speed - float(world.ego_speed[prev_step])) / DT_S if step else 0.0
    yaw_rate = (eyaw - float(world.ego_yaw[prev_step])) / DT_S if step else 0.0
    cars = [b for b in boxes[1:] if b["class"] == "car"]
    walkers = [b for b in boxes[1:] if b["class"] == "walker" and b["position"][0] > 0]
    parked = [b for b in boxes[1:] if b["class"] == "static_prop_car"]
    parked_ahead = [b["distance"] for b in parked if b["position"][0] > 0]
    lead = [b for b in cars if b["position"][0] > 0 and abs(b["position"][1]) < 1.75]
    red = bool(world.red_light[step])
    lights = [b for b in boxes[1:] if b["class"] == "traffic_light"]
    scenario_type = None if spec.scenario in ("noScenarios", "NA") else spec.scenario
    meta: dict[str, Any] = {
        # identity / environment
        "target_dataset": 1, "town": spec.town, "scenario": spec.scenario, "weather_setting": world.weather,
        "weather_parameters": {"cloudiness": 10.0, "precipitation": 0.0, "precipitation_deposits": 0.0,
                               "wind_intensity": 10.0, "sun_azimuth_angle": 90.0, "sun_altitude_angle": 60.0,
                               "fog_density": 0.0, "fog_distance": 0.0, "wetness": 0.0},
        "visual_visibility": 0, "jpeg_storage_quality": world.jpeg_quality,
        "current_active_scenario_type": scenario_type, "previous_active_scenario_type": None,
        # ego state
        "speed": speed, "accel_x": float(accel), "accel_y": float(speed * yaw_rate), "accel_z": 0.0,
        "angular_velocity_x": 0.0, "angular_velocity_y": 0.0, "angular_velocity_z": float(yaw_rate),
        "pos_global": [ex, ey, 0.0], "noisy_pos_global": [ex, ey], "theta": eyaw, "privileged_yaw": eyaw,
        "ego_matrix": _ego_matrix(ex, ey, eyaw),
        "steer": float(world.steer[step]), "throttle": float(world.throttle[step]),
        "brake": bool(world.brake[step]),
        "target_speed": float(world.target_speed[step]), "target_speed_limit": 13.89, "speed_limit": 13.89,
        "last_encountered_speed_limit_sign": 13.89, "second_highest_speed": 13.89,
        "second_highest_speed_limit": 13.89,
        "max_traffic_speed": max([b["speed"] for b in cars], default=0.0),
        "max_adversarial_speed": 0.0,
        "average_traffic_speed": float(np.mean([b["speed"] for b in cars])) if cars else 0.0,
        "privileged_acceleration": float(accel), "privileged_rotation_speed": float(yaw_rate),
        # temporal arrays (20 Hz, index 0 = now)
        "future_positions": future_positions, "future_yaws": future_yaw.astype(np.float32),
        "future_speeds": world.ego_speed[step:step + len(future_xy)].astype(np.float32),
        "past_positions": past_positions, "past_filtered_state": past_positions,
        "privileged_past_positions": past_positions,
        "past_speeds": world.ego_speed[past_idx].astype(np.float32),
        "past_yaws": _wrap(world.ego_yaw[past_idx] - eyaw).astype(np.float32),
        # route / navigation
        "route": route, "changed_route": False,
        # situation flags
        "stop_sign_hazard": False, "walker_hazard": False, "light_hazard": red, "vehicle_hazard": False,
        "stop_sign_close": False, "walker_close": bool(walkers and walkers[0]["distance"] < 10.0),
        "vehicle_affecting_id": lead[0]["id"] if lead and lead[0]["distance"] < 15.0 else None,
        "walker_affecting_id": None, "walker_close_id": None, "lane_type_str": "Driving",
        "is_intersection": False, "is_junction": False, "junction_id": -1, "road_id": 7, "lane_id": -1,
        "next_road_ids": [7], "next_next_road_ids_ego": [7], "lane_change_str": "Both",
        "left_lane_marking_color_str": "White", "right_lane_marking_color_str": "White",
        "left_lane_marking_type_str": "Solid", "right_lane_marking_type_str": "Broken",
        "traffic_light_state": lights[0]["state"] if lights else "None",
        "reduce_speed_discontinuous_road": False, "reduce_speed_high_route_curvature": route_curvature > 0.8,
        "does_emergency_brake_for_pedestrians": False, "construction_obstacle_two_ways_stuck": False,
        "accident_two_ways_stuck": False, "parked_obstacle_two_ways_stuck": False,
        "vehicle_opens_door_two_ways_stuck": False, "vehicle_opened_door": False, "vehicle_door_side": None,
        "ego_lane_id": -1, "rear_danger_8": False, "rear_danger_16": False, "brake_cutin": False,
        "emergency_brake_for_special_vehicle": False, "slower_bad_visibility": False,
        "slower_clutterness": False,
        "slower_occluded_junction": False, "over_head_traffic_light": False, "europe_traffic_light": False,
        "num_parking_vehicles_in_proximity": sum(1 for b in parked if b["distance"] < 20.0),
        "num_dangerous_adversarial": 0, "num_safe_adversarial": 0, "num_ignored_adversarial": 0,
        "rear_adversarial_id": -1, "scenario_obstacles_ids": [], "scenario_actors_ids": [],
        "scenario_obstacles_convex_hull": [], "cut_in_actors_ids": [],
        # distances (None = not applicable; LEAD maps None to +inf)
        "distance_to_next_junction": None, "dist_to_junction": None, "dist_to_road_discontinuity": None,
        "dist_to_construction_site": None, "dist_to_accident_site": None,
        "dist_to_parked_obstacle": min(parked_ahead) if parked_ahead else None,
        "dist_to_vehicle_opens_door": None, "dist_to_cutin_vehicle": None,
        "dist_to_pedestrian": walkers[0]["distance"] if walkers else None, "dist_to_biker": None,
        "distance_to_intersection_index_ego": None, "signed_dist_to_lane_change": None,
        "route_left_length": float(world.route_end_u - world.ego_u[step]), "distance_ego_to_route": 0.0,
        "speed_reduced_by_obj_distance": None, "speed_reduced_by_obj_type": None,
        "speed_reduced_by_obj_id": None,
        "route_curvature": route_curvature, "ego_lane_width": LANE_WIDTH_M, "target_lane_width": LANE_WIDTH_M,
        # perturbation (constant per route)
        "perturbation_translation": world.perturbation_translation,
        "perturbation_rotation": world.perturbation_rotation_deg,
    }
    # one RoutePlanner per pop distance ('next_target_points_3.25', ...) plus the unsuffixed 7.5 m one
    for distance, suffix in [(d, f"_{d}") for d in TP_DISTANCES_M] + [(UNSUFFIXED_PLANNER_M, "")]:
        nxt, nxt_cmd, prev, prev_cmd = _planner_lists(world, step, planner_cache, keypoints, distance)
        prefixes = ("", "gps_") if suffix else ("",)
        for gps in prefixes:       # the GNSS planner sees the true pose here (no GNSS noise simulated)
            meta[f"next_{gps}target_points{suffix}"] = nxt
            meta[f"next_{gps}commands{suffix}"] = nxt_cmd
            meta[f"previous_{gps}target_points{suffix}"] = prev
            meta[f"previous_{gps}commands{suffix}"] = prev_cmd
    return meta


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
    ext = np.concatenate([extent, np.tile(POLE_EXTENT_M, (len(px), 1)),
                          np.tile(BUILDING_EXTENT_M, (len(bx), 1))])
    sem = np.concatenate([[a.sem_class for a in world.actors], np.zeros(len(px) + len(bx))]).astype(np.uint8)
    rgb = np.concatenate([np.array([a.rgb for a in world.actors]).reshape(-1, 3),
                          np.tile((120, 120, 125), (len(px), 1)),
                          np.tile((150, 130, 110), (len(bx), 1))]).astype(np.uint8)
    instance = np.concatenate([np.array([a.actor_id for a in world.actors], np.int64),
                               np.full(len(px) + len(bx), -1, np.int64)])
    z0 = np.zeros(len(wx))
    if world.light_u is not None:     # the signal head on top of the light's mast, red or green
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
    return _Solids(x=sx[keep], y=sy[keep], yaw=syaw[keep], extent=ext[keep], sem=sem[keep], rgb=rgb[keep],
                   instance=instance[keep], z0=z0[keep])


def _sensor_pose_world(world: _World, step: int, sensor: _Sensor) -> tuple[float, float, float]:
    ex, ey, eyaw = _ego_pose(world, step)
    wx, wy = _from_frame(np.array([0.0]), np.array([sensor.dy]), ex, ey, eyaw)
    return float(wx[0]), float(wy[0]), eyaw + sensor.dyaw


# ================================================================================================
# route writer
# ================================================================================================
def _results(spec: _RouteSpec, route_length_m: float) -> dict[str, Any]:
    """A full leaderboard RouteRecord (statistics_manager_local.py) for the route's kind."""
    rng = np.random.default_rng([spec.seed, spec.route_idx, 3])
    infractions: dict[str, list[str]] = {key: [] for key in RESULT_INFRACTION_KEYS}
    score_route, penalty = 100.0, 1.0
    if spec.kind in ("min_speed", "min_speed_outside_lanes"):
        for _ in range(int(rng.integers(1, 3))):
            pct = float(rng.uniform(60.0, 95.0))
            infractions["min_speed_infractions"].append(
                f"Average speed is {pct:.2f}% of the surrounding traffic's one")
            penalty *= 1 - 0.3 * (1 - pct / 100)
    if spec.kind == "min_speed_outside_lanes":
        metres = float(rng.uniform(3.0, 20.0))
        pct = 100.0 * metres / max(route_length_m, 1.0)
        infractions["outside_route_lanes"].append(
            f"Agent went outside its route lanes for about {metres:.3f} meters "
            f"({pct:.2f}% of the completed route)")
        penalty *= 1 - pct / 100
    if spec.kind == "collision":
        infractions["collisions_vehicle"].append(
            "Agent collided against object with type=vehicle.tesla.model3 and id=431 "
            "at (x=12.3, y=-45.6, z=0.1)")
        penalty *= 0.6
    if spec.kind == "agent_crashed":
        score_route = float(rng.uniform(10.0, 80.0))
    num_infractions = sum(len(v) for v in infractions.values())
    if spec.kind == "agent_crashed":
        status = "Failed - Agent crashed"
    else:
        status = "Completed" if num_infractions > 0 else "Perfect"
    duration_game = (spec.num_frames * DATA_SAVE_FREQ + EXTRA_STEPS) * DT_S
    return {
        "timestamp": spec.route_date_string, "index": spec.route_idx,
        "route_id": f"RouteScenario_{spec.route_idx}_rep0", "status": status,
        "num_infractions": num_infractions,
        "infractions": infractions,
        "scores": {"score_route": round(score_route, 6), "score_penalty": round(penalty, 6),
                   "score_composed": round(max(score_route * penalty, 0.0), 6)},
        "meta": {"route_length": round(float(route_length_m), 3), "duration_game": round(duration_game, 3),
                 "duration_system": round(duration_game * 1.7, 3)},
    }


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
    planner_cache: dict[int, tuple] = {}     # popped keypoints -> shared lists (pickled once per meta)
    normal = _Sensor(0.0, 0.0)
    perturbated = _Sensor(world.perturbation_translation, math.radians(world.perturbation_rotation_deg))
    for frame_idx in range(start, stop):
        step = frame_idx * DATA_SAVE_FREQ
        rng = np.random.default_rng([spec.seed, spec.route_idx, 2, frame_idx])
        visible: dict[int, int] = {}
        for sensor, pert in ((normal, False), (perturbated, True)):
            sx, sy, syaw = _sensor_pose_world(world, step, sensor)
            u = world.ego_u[step]
            hdmap = _render_map(world, sx, sy, syaw, (-64.0, 64.0), (-64.0, 64.0), HDMAP_PIXELS_PER_M,
                                (u - 100.0, u + 100.0))
            camera_map = _render_map(world, sx, sy, syaw, CAMERA_MAP_RANGE[:2], CAMERA_MAP_RANGE[2:],
                                     CAMERA_MAP_PPM, (u - 20.0, u + 150.0))
            rgb, sem, depth, seen = _render_cameras(world, _solids(world, step, sensor), camera_map)
            if not pert:
                visible = seen
            (layout.modality_path(route_dir, "rgb", frame_idx, perturbated=pert)
             .write_bytes(_jpeg(rgb, world.jpeg_quality)))
            layout.modality_path(route_dir, "semantics", frame_idx, perturbated=pert).write_bytes(_png(sem))
            layout.modality_path(route_dir, "depth", frame_idx, perturbated=pert).write_bytes(
                _png(_depth_png_array(depth)))
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
