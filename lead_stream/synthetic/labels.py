"""World at a step → LEAD's per-frame labels (bboxes/ and metas/ dicts).

`_boxes` lists the ego first, then the actors within LEAD's bb_save_radius and the traffic light ahead,
sorted by distance. `_meta` fills every key LEAD's expert saves, with one RoutePlanner per pop distance
(list objects shared between metas, so pickles stay small). Outputs are plain dicts; `encode` turns them into
bytes. The route's results.json record is built in `results`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lead_stream.core.constants import (
    BICYCLE_MESHES,
    MOTORCYCLE_MESHES,
    TP_DISTANCES_M,
    SemanticClass,
)
from lead_stream.synthetic.meta_schema import to_current_schema
from lead_stream.synthetic.poses import (
    _ego_matrix,
    _ego_pose,
    _to_frame,
)
from lead_stream.synthetic.world import (
    DT_S,
    EGO_EXTENT_M,
    LANE_WIDTH_M,
    ROAD_HALF_WIDTH_M,
    _RouteSpec,
    _World,
    _wrap,
)

# --- generator settings (fixed; LEAD's values where LEAD has one) ---------------------------------
MAX_FUTURE_STEPS = {"legacy": 200, "current": 60}  # future_*/past_* hold <= 201 / <= 61 entries (0 = now)
BOX_FUTURE_STEPS = 40  # box future_positions hold at most 41 entries
BB_SAVE_RADIUS_M = 96.0  # LEAD's bb_save_radius
ROUTE_POINT_SPACING_M = 1.0
NUM_META_ROUTE_POINTS = 50
TRAFFIC_LIGHT_ID = 90_000  # id of the route's traffic light box
TRAFFIC_LIGHT_EXTENT_M = (0.5, 1.6, 0.5)  # LEAD's traffic light box: the stop-line trigger area of the lane
UNSUFFIXED_PLANNER_M = 7.5  # min distance of the planner behind the unsuffixed next_target_points keys


def _future_track(
    xs: np.ndarray,
    ys: np.ndarray,
    yaws: np.ndarray,
    step: int,
    horizon: int,
    ox: float,
    oy: float,
    oyaw: float,
) -> tuple[np.ndarray, np.ndarray]:
    end = min(step + horizon + 1, len(xs))
    fx, fy = _to_frame(xs[step:end], ys[step:end], ox, oy, oyaw)
    return np.stack([fx, fy], axis=1), _wrap(yaws[step:end] - oyaw)


def _boxes(
    world: _World, step: int, hits: np.ndarray, visible: dict[int, int], radar_hits: dict[int, int]
) -> list[dict]:
    ex, ey, eyaw = _ego_pose(world, step)
    speed = float(world.ego_speed[step])
    ego = {
        "class": "ego_car",
        "extent": list(EGO_EXTENT_M),
        "position": [0.0, 0.0, 0.0],
        "yaw": 0.0,
        "distance": 0.0,
        "speed": speed,
        "brake": bool(world.brake[step]),
        "id": 1,
        "matrix": _ego_matrix(ex, ey, eyaw).astype(np.float64).tolist(),
        "num_points": -1,
        "visible_pixels": -1,
        "transfuser_semantics_id": 0,
    }
    others = []
    for i, actor in enumerate(world.actors):
        lx, ly = _to_frame(actor.x[step], actor.y[step], ex, ey, eyaw)
        distance = float(math.hypot(lx, ly))
        if distance > BB_SAVE_RADIUS_M:
            continue
        box: dict[str, Any] = {
            "class": actor.box_class,
            "extent": list(actor.extent),
            "position": [float(lx), float(ly), 0.0],
            "yaw": float(_wrap(actor.yaw[step] - eyaw)),
            "distance": distance,
            "id": actor.actor_id,
            "matrix": _ego_matrix(float(actor.x[step]), float(actor.y[step]), float(actor.yaw[step]))
            .astype(np.float64)
            .tolist(),
            "num_points": int(hits[i]),
            "visible_pixels": int(visible.get(actor.actor_id, 0)),
        }
        if actor.box_class == "static_prop_car":
            box["transfuser_semantics_id"] = int(SemanticClass.VEHICLE)
        else:
            future_xy, future_yaw = _future_track(
                actor.x, actor.y, actor.yaw, step, BOX_FUTURE_STEPS, ex, ey, eyaw
            )
            v = float(actor.speed[step])
            box.update(
                {
                    "speed": v,
                    "num_radar_points": int(radar_hits.get(actor.actor_id, 0)),
                    "role_name": "background",
                    "ego_velocity": [v * math.cos(box["yaw"]) - speed, v * math.sin(box["yaw"]), 0.0],
                    "future_positions": future_xy.astype(np.float16),
                    "future_yaws": future_yaw.astype(np.float16),
                }
            )
            if actor.box_class == "car":
                box.update(
                    {
                        "brake": 0.0,
                        "steer": 0.0,
                        "throttle": 0.5,
                        "transfuser_semantics_id": int(actor.sem_class),
                        "type_id": actor.type_id,
                        "base_type": _base_type(actor.type_id),
                        "lane_type_str": "Driving",
                        "road_id": 7,
                        "lane_id": -1 if actor.lane_offset >= 0 else 1,
                        "speed_limit": 13.89,
                        "next_action": "LaneFollow",
                        "vehicle_cuts_in": False,
                    }
                )
            else:
                box["transfuser_semantics_id"] = int(SemanticClass.PEDESTRIAN)
        others.append(box)
    if world.light_u is not None:  # LEAD saves only lights that affect the ego, i.e. ahead of it
        wx, wy, wh = world.road.pose(np.array([world.light_u]))
        lx, ly = _to_frame(wx, wy, ex, ey, eyaw)
        distance = float(math.hypot(lx[0], ly[0]))
        if lx[0] > 0 and distance <= BB_SAVE_RADIUS_M:
            others.append(
                {
                    "class": "traffic_light",
                    "extent": list(TRAFFIC_LIGHT_EXTENT_M),
                    "position": [float(lx[0]), float(ly[0]), 0.0],
                    "yaw": float(_wrap(wh[0] - eyaw)),
                    "distance": distance,
                    "id": TRAFFIC_LIGHT_ID,
                    "matrix": _ego_matrix(float(wx[0]), float(wy[0]), float(wh[0]))
                    .astype(np.float64)
                    .tolist(),
                    "state": "Red" if world.red_light[step] else "Green",
                    "affects_ego": True,
                    "same_lane_as_ego": True,
                    "is_over_head_traffic_light": False,
                    "is_europe_traffic_light": False,
                    "distance_to_physical_traffic_light": float(math.hypot(1.0, ROAD_HALF_WIDTH_M + 1.0)),
                    "dummy_traffic_light_bounding_box": False,
                    "transfuser_semantics_id": int(SemanticClass.TRAFFIC_LIGHT),
                }
            )
    others.sort(key=lambda b: (b["distance"], b["id"]))
    return [ego] + others


def _planner_lists(
    world: _World,
    step: int,
    cache: dict[int, tuple[list, list, list, list]],
    keypoints: list[list[float]],
    pop_distance: float,
) -> tuple[list, list, list, list]:
    """LEAD RoutePlanner state: keypoints that came within `pop_distance` are popped (first stays behind)."""
    u = world.ego_u[step]
    popped = int(np.searchsorted(world.keypoint_u - pop_distance, u, side="right")) - 1
    popped = int(np.clip(popped, 0, len(keypoints) - 2))
    if popped not in cache:  # shared list objects → pickle memoises them (small metas)
        cache[popped] = (
            keypoints[popped:],
            world.keypoint_commands[popped:],
            keypoints[:popped],
            world.keypoint_commands[:popped],
        )
    return cache[popped]


def _meta(
    world: _World,
    spec: _RouteSpec,
    step: int,
    keypoints: list[list[float]],
    planner_cache: dict[int, tuple],
    boxes: list[dict],
) -> dict[str, Any]:
    ex, ey, eyaw = _ego_pose(world, step)
    speed = float(world.ego_speed[step])
    horizon = MAX_FUTURE_STEPS[spec.lead_version]
    future_xy, future_yaw = _future_track(
        world.ego_x, world.ego_y, world.ego_yaw, step, horizon, ex, ey, eyaw
    )
    future_positions = np.concatenate([future_xy, np.zeros((len(future_xy), 1))], axis=1).astype(np.float32)
    past_idx = np.arange(step, max(step - horizon, 0) - 1, -1)
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
        "target_dataset": 1,
        "town": spec.town,
        "scenario": spec.scenario,
        "weather_setting": world.weather,
        "weather_parameters": {
            "cloudiness": 10.0,
            "precipitation": 0.0,
            "precipitation_deposits": 0.0,
            "wind_intensity": 10.0,
            "sun_azimuth_angle": 90.0,
            "sun_altitude_angle": 60.0,
            "fog_density": 0.0,
            "fog_distance": 0.0,
            "wetness": 0.0,
        },
        "visual_visibility": 0,
        "jpeg_storage_quality": world.jpeg_quality,
        "current_active_scenario_type": scenario_type,
        "previous_active_scenario_type": None,
        # ego state
        "speed": speed,
        "accel_x": float(accel),
        "accel_y": float(speed * yaw_rate),
        "accel_z": 0.0,
        "angular_velocity_x": 0.0,
        "angular_velocity_y": 0.0,
        "angular_velocity_z": float(yaw_rate),
        "pos_global": [ex, ey, 0.0],
        "noisy_pos_global": [ex, ey],
        "theta": eyaw,
        "privileged_yaw": eyaw,
        "ego_matrix": _ego_matrix(ex, ey, eyaw),
        "steer": float(world.steer[step]),
        "throttle": float(world.throttle[step]),
        "brake": bool(world.brake[step]),
        "target_speed": float(world.target_speed[step]),
        "target_speed_limit": 13.89,
        "speed_limit": 13.89,
        "last_encountered_speed_limit_sign": 13.89,
        "second_highest_speed": 13.89,
        "second_highest_speed_limit": 13.89,
        "max_traffic_speed": max([b["speed"] for b in cars], default=0.0),
        "max_adversarial_speed": 0.0,
        "average_traffic_speed": float(np.mean([b["speed"] for b in cars])) if cars else 0.0,
        "privileged_acceleration": float(accel),
        "privileged_rotation_speed": float(yaw_rate),
        # temporal arrays (20 Hz, index 0 = now)
        "future_positions": future_positions,
        "future_yaws": future_yaw.astype(np.float32),
        "future_speeds": world.ego_speed[step : step + len(future_xy)].astype(np.float32),
        "past_positions": past_positions,
        "past_filtered_state": past_positions,
        "privileged_past_positions": past_positions,
        "past_speeds": world.ego_speed[past_idx].astype(np.float32),
        "past_yaws": _wrap(world.ego_yaw[past_idx] - eyaw).astype(np.float32),
        # route / navigation
        "route": route,
        "changed_route": False,
        # situation flags
        "stop_sign_hazard": False,
        "walker_hazard": False,
        "light_hazard": red,
        "vehicle_hazard": False,
        "stop_sign_close": False,
        "walker_close": bool(walkers and walkers[0]["distance"] < 10.0),
        "vehicle_affecting_id": lead[0]["id"] if lead and lead[0]["distance"] < 15.0 else None,
        "walker_affecting_id": None,
        "walker_close_id": None,
        "lane_type_str": "Driving",
        "is_intersection": False,
        "is_junction": False,
        "junction_id": -1,
        "road_id": 7,
        "lane_id": -1,
        "next_road_ids": [7],
        "next_next_road_ids_ego": [7],
        "lane_change_str": "Both",
        "left_lane_marking_color_str": "White",
        "right_lane_marking_color_str": "White",
        "left_lane_marking_type_str": "Solid",
        "right_lane_marking_type_str": "Broken",
        "traffic_light_state": lights[0]["state"] if lights else "None",
        "reduce_speed_discontinuous_road": False,
        "reduce_speed_high_route_curvature": route_curvature > 0.8,
        "does_emergency_brake_for_pedestrians": False,
        "construction_obstacle_two_ways_stuck": False,
        "accident_two_ways_stuck": False,
        "parked_obstacle_two_ways_stuck": False,
        "vehicle_opens_door_two_ways_stuck": False,
        "vehicle_opened_door": False,
        "vehicle_door_side": None,
        "ego_lane_id": -1,
        "rear_danger_8": False,
        "rear_danger_16": False,
        "brake_cutin": False,
        "emergency_brake_for_special_vehicle": False,
        "slower_bad_visibility": False,
        "slower_clutterness": False,
        "slower_occluded_junction": False,
        "over_head_traffic_light": False,
        "europe_traffic_light": False,
        "num_parking_vehicles_in_proximity": sum(1 for b in parked if b["distance"] < 20.0),
        "num_dangerous_adversarial": 0,
        "num_safe_adversarial": 0,
        "num_ignored_adversarial": 0,
        "rear_adversarial_id": -1,
        "scenario_obstacles_ids": [],
        "scenario_actors_ids": [],
        "scenario_obstacles_convex_hull": [],
        "cut_in_actors_ids": [],
        # distances (None = not applicable; LEAD maps None to +inf)
        "distance_to_next_junction": None,
        "dist_to_junction": None,
        "dist_to_road_discontinuity": None,
        "dist_to_construction_site": None,
        "dist_to_accident_site": None,
        "dist_to_parked_obstacle": min(parked_ahead) if parked_ahead else None,
        "dist_to_vehicle_opens_door": None,
        "dist_to_cutin_vehicle": None,
        "dist_to_pedestrian": walkers[0]["distance"] if walkers else None,
        "dist_to_biker": None,
        "distance_to_intersection_index_ego": None,
        "signed_dist_to_lane_change": None,
        "route_left_length": float(world.route_end_u - world.ego_u[step]),
        "distance_ego_to_route": 0.0,
        "speed_reduced_by_obj_distance": None,
        "speed_reduced_by_obj_type": None,
        "speed_reduced_by_obj_id": None,
        "route_curvature": route_curvature,
        "ego_lane_width": LANE_WIDTH_M,
        "target_lane_width": LANE_WIDTH_M,
        # perturbation (constant per route)
        "perturbation_translation": world.perturbation_translation,
        "perturbation_rotation": world.perturbation_rotation_deg,
    }
    # one RoutePlanner per pop distance ('next_target_points_3.25', ...) plus the unsuffixed 7.5 m one
    for distance, suffix in [(d, f"_{d}") for d in TP_DISTANCES_M] + [(UNSUFFIXED_PLANNER_M, "")]:
        nxt, nxt_cmd, prev, prev_cmd = _planner_lists(world, step, planner_cache, keypoints, distance)
        prefixes = ("", "gps_") if suffix else ("",)
        for gps in prefixes:  # the GNSS planner sees the true pose here (no GNSS noise simulated)
            meta[f"next_{gps}target_points{suffix}"] = nxt
            meta[f"next_{gps}commands{suffix}"] = nxt_cmd
            meta[f"previous_{gps}target_points{suffix}"] = prev
            meta[f"previous_{gps}commands{suffix}"] = prev_cmd
    if spec.lead_version == "current":
        to_current_schema(meta, world, step)
    return meta


def _base_type(type_id: str) -> str:
    """CARLA's `base_type` attribute of a vehicle blueprint."""
    if type_id in BICYCLE_MESHES:
        return "bicycle"
    return "motorcycle" if type_id in MOTORCYCLE_MESHES else "car"
