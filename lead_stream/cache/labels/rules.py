"""LEAD's label constants and scenario rules shared by the box, occupancy and radar labels
(lead/common/constants.py, config_training.py; LEAD_FORMAT §4.4)."""

from __future__ import annotations

from typing import Any

from lead_stream.core.constants import BICYCLE_MESHES, MOTORCYCLE_MESHES
from lead_stream.sources.lead_schema import CURRENT, lead_schema_of

# --- LEAD label constants (lead/common/constants.py, config_training.py) ---------------------------
BOX_MAX_Z_M = 4.0  # boxes with z outside (-4, 4) are dropped (§4.4)
CONSTRUCTION_CONE_HALF_EXTENT_M = (0.1720348298549652, 0.1720348298549652)
TRAFFIC_WARNING_HALF_EXTENT_M = (1.186714768409729, 1.4352929592132568)
STATIC_TYPES_WHITE_LIST = ("static.prop.constructioncone", "static.prop.trafficwarning")
CAR_OPEN_DOOR_EXTRA_WIDTH_M = 1.2
BOX_WAYPOINT_MAX_JUMP_M = 10.0  # max_distance_future_waypoint
CONSTRUCTION_SITE_RADIUS_M = 24.0  # construction-site hull: every corner within 24 m of the mean
OBSTACLE_SITE_RADIUS_M = 48.0  # scenario-obstacle hull: within 48 m
PEDESTRIAN_MIN_LIDAR_POINTS, PEDESTRIAN_MIN_VISIBLE_PIXELS = 5, 15
PARKING_MIN_LIDAR_POINTS, PARKING_MIN_VISIBLE_PIXELS = 3, 5
VEHICLE_MIN_LIDAR_POINTS, VEHICLE_MIN_VISIBLE_PIXELS = 1, 1
WALKER_BEV_SCALE = 2.5  # scale_pedestrian_bev_semantic_size
WALKER_BEV_MIN_HALF_EXTENT_M = 0.4  # pedestrian_bev_min_extent
OBSTACLE_SCENARIOS = (
    "Accident",
    "AccidentTwoWays",
    "BlockedIntersection",
    "ParkedObstacle",
    "ParkedObstacleTwoWays",
)
PARKING_SCENARIOS = (
    "ParkingCrossingPedestrian",
    "ParkingCutIn",
    "StaticCutIn",
    "PedestrianCrossing",
    "ParkingExit",
)
# parked-vehicle / prop mesh path → half extents (x, y) in metres (LEAD's LOOKUP_TABLE)
MESH_HALF_EXTENTS_M: dict[str, tuple[float, float]] = {
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Lincoln/SM_LincolnParked.SM_LincolnParked": (
        2.44619083404541,
        1.115301489830017,
    ),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Charger/SM_ChargerParked.SM_ChargerParked": (
        2.5039126873016357,
        1.0485419034957886,
    ),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/VolkswagenT2/SM_VolkswagenT2_2021_Parked."
    "SM_VolkswagenT2_2021_Parked": (2.2210919857025146, 0.9388753771781921),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/FordCrown/SM_FordCrown_parked.SM_FordCrown_parked": (
        2.6828393936157227,
        0.9732309579849243,
    ),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/NissanPatrol2021/SM_NissanPatrol2021_parked."
    "SM_NissanPatrol2021_parked": (2.782914400100708, 1.217571496963501),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/MercedesCCC/SM_MercedesCCC_Parked.SM_MercedesCCC_Parked": (
        2.3368194103240967,
        1.0011461973190308,
    ),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/TeslaM3/SM_TeslaM3_parked.SM_TeslaM3_parked": (
        2.3958897590637207,
        1.081725001335144,
    ),
    "/Game/Carla/Static/Car/4Wheeled/ParkedVehicles/Mini2021/SM_Mini2021_parked.SM_Mini2021_parked": (
        2.2763495445251465,
        1.0926425457000732,
    ),
    "/Game/Carla/Static/Dynamic/Garden/SM_PlasticTable.SM_PlasticTable": (
        1.241101622581482,
        1.241101622581482,
    ),
    "/Game/Carla/Static/Dynamic/Garden/SM_PlasticChair.SM_PlasticChair": (
        0.36523768305778503,
        0.37522444128990173,
    ),
    "/Game/Carla/Static/Dynamic/Construction/SM_ConstructionCone.SM_ConstructionCone": (
        0.1720348298549652,
        0.1720348298549652,
    ),
}


def scenario_type_of(meta: dict[str, Any]) -> str:
    """LEAD's `scenario_type`: the current active scenario, else the previous one, else "NA"."""
    for key in ("current_active_scenario_type", "previous_active_scenario_type"):
        value = meta.get(key)
        if value is not None and value != "NA":
            return str(value)
    return "NA"


def door_opens_left(meta: dict[str, Any]) -> bool:
    """LEAD's test `meta["vehicle_door_side"] == "left"` (any other value, a list included, is the right)."""
    return meta.get("vehicle_door_side") == "left"


def biker_meshes(meta: dict[str, Any]) -> frozenset[str]:
    """Blueprints labelled BIKER for this meta's LEAD schema: bicycles and motorcycles in legacy metas
    (8bb1118), only the three bicycles in current ones (4489176 labels motorcycles VEHICLE)."""
    return _CURRENT_BIKERS if lead_schema_of(meta) == CURRENT else _LEGACY_BIKERS


_LEGACY_BIKERS = frozenset(BICYCLE_MESHES + MOTORCYCLE_MESHES)
_CURRENT_BIKERS = frozenset(BICYCLE_MESHES)
