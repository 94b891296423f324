"""Seed → route specs and each route's simulated world: road, ego motion, actors, frame transforms.

`_route_specs` derives every route's kind, scenario, town and directory name from the seed.
`_make_world(spec)` simulates the ego at 20 Hz along a curving three-lane road (speed profile, red light,
steering) and lays out the vehicles, walkers and parked cars that move along the same road. A world depends
only on (seed, route_idx), so every process that writes part of a route rebuilds the identical world. The
per-step queries and world ↔ ego ↔ sensor transforms are in `poses`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lead_stream.core.constants import (
    BICYCLE_MESHES,
    BIKER_MESHES,
    CAMERA_HEIGHT_PX,
    CAMERA_WIDTH_PX,
    CARLA_FPS,
    DATA_SAVE_FREQ,
    NUM_CAMERAS,
    SCENARIO_TYPES,
    SemanticClass,
)

# --- generator settings (fixed; LEAD's values where LEAD has one) ---------------------------------
DT_S = 1.0 / CARLA_FPS
EXTRA_STEPS = 60  # simulated steps after the last saved frame (>= 61 future_positions)
LANE_WIDTH_M = 3.5  # three lanes: oncoming (y = -3.5) | ego (0) | same direction (+3.5)
ROAD_HALF_WIDTH_M = 1.5 * LANE_WIDTH_M
SIDEWALK_OFFSET_M = 7.0
POLE_OFFSET_M = 8.5
POLE_SPACING_M = 12.0
BUILDING_OFFSET_M = 17.0
EGO_EXTENT_M = (2.4508, 1.0641, 0.7553)
RED_LIGHT_STEPS = 100  # 5 s of red light in routes long enough for one
TOWNS = ("Town01", "Town02", "Town03", "Town04", "Town05", "Town06", "Town07", "Town10HD", "Town12", "Town13")
WEATHERS = ("ClearNoon", "CloudyNoon", "WetNoon", "ClearSunset", "Custom9", "SoftRainNoon")
CAR_BLUEPRINTS = (
    ("vehicle.tesla.model3", (2.40, 1.08, 0.76)),
    ("vehicle.audi.a2", (1.85, 0.90, 0.77)),
    ("vehicle.lincoln.mkz_2020", (2.45, 1.05, 0.75)),
    ("vehicle.mercedes.coupe_2020", (2.34, 1.00, 0.71)),
    ("vehicle.nissan.patrol_2021", (2.78, 1.07, 1.00)),
    ("vehicle.ford.mustang", (2.45, 1.02, 0.65)),
)
EMERGENCY_EXTENT_M = (2.65, 1.03, 0.80)
BIKE_EXTENT_M = (0.90, 0.40, 0.80)
WALKER_EXTENT_M = (0.30, 0.30, 0.90)
PARKED_EXTENT_M = (2.20, 0.95, 0.75)

# route kinds: results.json status and infractions (usable ones first, then rejected ones)
USABLE_KINDS = ("perfect", "min_speed", "perfect", "min_speed_outside_lanes")
REJECTED_KINDS = ("agent_crashed", "collision", "unfinished")


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
    lead_version: str = "current"  # meta schema written: "current" (kesai-labs/lead 4489176) or "legacy"

    @property
    def route_id(self) -> str:
        return f"{self.scenario}/{self.route_dir}"


def _route_specs(
    num_routes: int, num_frames: int, seed: int, num_rejected: int, lead_version: str = "current"
) -> list[_RouteSpec]:
    rng = np.random.default_rng([seed, 0x5EED])
    kinds = [USABLE_KINDS[i] if i < len(USABLE_KINDS) else "perfect" for i in range(num_routes)]
    kinds += [REJECTED_KINDS[i % len(REJECTED_KINDS)] for i in range(num_rejected)]
    scenarios = [s for s in SCENARIO_TYPES if s != "NA"]
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    clock_s = int(rng.integers(0, 20 * 3600))
    specs = []
    for route_idx, kind in enumerate(kinds):
        clock_s += int(rng.integers(60, 900))  # routes start minutes apart, like a real collection
        hh, mm, ss = clock_s // 3600 % 24, clock_s // 60 % 60, clock_s % 60
        routefile = f"route_{int(rng.integers(0, 10**6)):06d}"
        date = "_".join(f"{v:02d}" for v in (month, day, hh, mm, ss))
        route_date_string = f"{routefile}_route{route_idx}_{date}"
        town = TOWNS[int(rng.integers(len(TOWNS)))]
        scenario = scenarios[int(rng.integers(len(scenarios)))]
        specs.append(
            _RouteSpec(
                seed=seed,
                route_idx=route_idx,
                kind=kind,
                scenario=scenario,
                town=town,
                route_dir=f"{town}_Rep0_{route_date_string}",
                route_date_string=route_date_string,
                num_frames=num_frames,
                lead_version=lead_version,
            )
        )
    return specs


# ================================================================================================
# world: road, ego motion, actors
# ================================================================================================
def _wrap(angle: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


@dataclass
class _Road:
    """A centreline parametrised by arc length u (metres), world frame (x fwd, y right, yaw towards +y)."""

    u: np.ndarray  # (M,) arc-length grid
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray  # unwrapped yaw (rad)

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
    for _ in range(2):  # two sinusoids; heading swing per half period <= ~0.6 rad so the road never loops
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
    box_class: str  # "car", "walker", "static_prop_car", "pole"
    extent: tuple[float, float, float]
    type_id: str
    sem_class: int  # TransFuser semantic id used for camera pixels
    rgb: tuple[int, int, int]
    x: np.ndarray  # (num_steps,) world positions, yaw and forward speed per 20 Hz step
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    lane_offset: float = 0.0


@dataclass
class _World:
    road: _Road
    ego_u: np.ndarray  # (num_steps,) arc length of the ego
    ego_x: np.ndarray
    ego_y: np.ndarray
    ego_yaw: np.ndarray  # unwrapped
    ego_speed: np.ndarray
    target_speed: np.ndarray
    brake: np.ndarray  # bool
    throttle: np.ndarray
    steer: np.ndarray
    red_light: np.ndarray  # bool: a red light holds the ego
    light_u: float | None  # arc length of the stop line of the route's traffic light (None: no light)
    actors: list[_Actor]
    keypoint_u: np.ndarray  # sparse route keypoints (arc length)
    keypoint_commands: list[int]
    route_end_u: float
    perturbation_translation: float
    perturbation_rotation_deg: float
    jpeg_quality: int
    weather: str
    stream_seed: tuple[int, int]  # (seed, route_idx): per-step random streams derive from it
    texture: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    radar_cache: dict[int, list[np.ndarray]] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        def stack(attr: str) -> np.ndarray:
            return np.array([getattr(a, attr) for a in self.actors], np.float64).reshape(len(self.actors), -1)

        self.actor_x, self.actor_y = stack("x"), stack("y")  # (num_actors, num_steps)
        self.actor_yaw, self.actor_speed = stack("yaw"), stack("speed")
        self.actor_extent = np.array([a.extent for a in self.actors], np.float64).reshape(-1, 3)


def _make_world(spec: _RouteSpec) -> _World:
    rng = np.random.default_rng([spec.seed, spec.route_idx, 1])
    num_steps = (spec.num_frames - 1) * DATA_SAVE_FREQ + 1 + EXTRA_STEPS
    cruise = rng.uniform(6.0, 12.0)
    target = np.full(num_steps, cruise)
    red_light = np.zeros(num_steps, bool)
    if num_steps > 200 and rng.random() < 0.6:  # a red light: stop for ~5 s somewhere in the middle
        stop_at = int(rng.uniform(0.3, 0.6) * num_steps)
        red_light[stop_at : stop_at + RED_LIGHT_STEPS] = True
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
    curvature = np.gradient(ego_yaw, ego_u + 1e-6 * np.arange(num_steps))  # dθ/du
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

    actors = _make_actors(rng, road, ego_u, num_steps, cruise, route_end_u, spec.lead_version)
    translation = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 1.0))
    rotation = 0.0
    while abs(rotation) < 0.5:
        rotation = float(rng.uniform(-12.5, 12.5))
    texture = rng.integers(0, 18, size=(CAMERA_HEIGHT_PX, CAMERA_WIDTH_PX * NUM_CAMERAS, 4), dtype=np.uint8)
    texture[..., 3] = 0
    texture = texture.view(np.uint32)[..., 0]  # (H, W) packed RGBX noise, added to the packed image
    return _World(
        road=road,
        ego_u=ego_u,
        ego_x=ego_x,
        ego_y=ego_y,
        ego_yaw=ego_yaw,
        ego_speed=speed,
        target_speed=target,
        brake=brake,
        throttle=throttle,
        steer=steer,
        red_light=red_light,
        light_u=light_u,
        actors=actors,
        keypoint_u=keypoint_u,
        keypoint_commands=commands,
        route_end_u=route_end_u,
        perturbation_translation=translation,
        perturbation_rotation_deg=rotation,
        jpeg_quality=int(rng.choice([30, 90])),
        weather=WEATHERS[int(rng.integers(len(WEATHERS)))],
        stream_seed=(spec.seed, spec.route_idx),
        texture=texture,
    )


def _make_actors(
    rng: np.random.Generator,
    road: _Road,
    ego_u: np.ndarray,
    num_steps: int,
    cruise: float,
    route_end_u: float,
    lead_version: str,
) -> list[_Actor]:
    t = np.arange(num_steps) * DT_S
    actors: list[_Actor] = []
    next_id = int(rng.integers(200, 400))

    def add(
        box_class: str,
        extent: tuple,
        type_id: str,
        sem: int,
        colour: tuple,
        u: np.ndarray,
        offset: float,
        backwards: bool,
        speed: float,
    ) -> None:
        nonlocal next_id
        x, y, h = road.pose(u, offset)
        yaw = h + math.pi if backwards else h
        actor_id = next_id if box_class != "static_prop_car" else 100_000_000 + next_id
        actors.append(
            _Actor(
                actor_id=actor_id,
                box_class=box_class,
                extent=extent,
                type_id=type_id,
                sem_class=sem,
                rgb=colour,
                x=x,
                y=y,
                yaw=yaw,
                speed=np.full(num_steps, speed),
                lane_offset=offset,
            )
        )
        next_id += int(rng.integers(1, 40))

    def colour() -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(30, 225, size=3))

    def vehicle() -> tuple[str, tuple, int]:
        roll = rng.random()
        if roll < 0.1:
            type_id = BIKER_MESHES[int(rng.integers(len(BIKER_MESHES)))]
            motorcycle_as_vehicle = lead_version == "current" and type_id not in BICYCLE_MESHES
            return (
                type_id,
                BIKE_EXTENT_M,
                SemanticClass.VEHICLE if motorcycle_as_vehicle else SemanticClass.BIKER,
            )
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
        add(
            "walker",
            WALKER_EXTENT_M,
            "walker.pedestrian.0001",
            SemanticClass.PEDESTRIAN,
            colour(),
            u0 + (-v if back else v) * t,
            side,
            back,
            v,
        )
    for u0 in np.arange(rng.uniform(10.0, 60.0), span, rng.uniform(60.0, 110.0)):
        add(
            "static_prop_car",
            PARKED_EXTENT_M,
            "static.prop.car",
            SemanticClass.VEHICLE,
            colour(),
            np.full(num_steps, u0),
            LANE_WIDTH_M * 1.5 + 1.4,
            False,
            0.0,
        )
    return actors
