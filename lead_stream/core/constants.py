"""LEAD's constants that several stages share: geometry, class ids, scenario names, packed-array columns.

Values follow `../shared/LEAD_FORMAT.md` (LEAD's `lead/common/constants.py`, `config_training.py`).
Ego frame: x forward, y right, z up (metres). BEV rasters: rows = y (+y down), cols = x (+x right),
row 0 / col 0 = the back-left corner (x = MIN_X_M, y = MIN_Y_M).
"""

from __future__ import annotations

from enum import IntEnum

# --- timing -----------------------------------------------------------------------------------
CARLA_FPS = 20  # simulator steps per second (metas' future_*/past_* arrays are 20 Hz)
DATA_SAVE_FREQ = 5  # a frame is saved every 5 steps -> 4 Hz frames
FRAME_HZ = CARLA_FPS // DATA_SAVE_FREQ

# --- camera rig (CARLA_LEADERBOARD2_3CAMERAS) ---------------------------------------------------
NUM_CAMERAS = 3
CAMERA_HEIGHT_PX = 384
CAMERA_WIDTH_PX = 384
CAMERA_FOV_DEG = 60.0
CAMERA_YAWS_DEG = (-54.5, 0.0, 54.5)  # left, front, right
CAMERA_POSITIONS_M = ((0.1, -0.35, 2.25), (0.35, 0.0, 2.25), (0.1, 0.35, 2.25))
RGB_HEIGHT_PX = CAMERA_HEIGHT_PX  # stitched image: 384 x 1152
RGB_WIDTH_PX = CAMERA_WIDTH_PX * NUM_CAMERAS
DEPTH_HEIGHT_PX = RGB_HEIGHT_PX // 4  # depth PNGs are saved at 1/4 resolution: 96 x 288
DEPTH_WIDTH_PX = RGB_WIDTH_PX // 4
DEPTH_MAX_M = 50.0  # 8-bit depth: depth_m = v / 255 * 50
DEPTH16_MAX_M = 96.0  # 16-bit variant: depth_m = v / 65535 * 96
HDMAP_SIZE_PX = 256  # hdmap PNG: 256 x 256, 2 px/m, ego at (128, 128)
HDMAP_PIXELS_PER_M = 2.0

# --- BEV planning area (LiDAR histogram, BEV semantics, CenterNet) -------------------------------
MIN_X_M, MAX_X_M = -32.0, 64.0
MIN_Y_M, MAX_Y_M = -40.0, 40.0
MIN_Z_M, MAX_Z_M = -4.0, 10.0
PIXELS_PER_M = 4.0
BEV_HEIGHT_PX = int((MAX_Y_M - MIN_Y_M) * PIXELS_PER_M)  # 320 rows (y)
BEV_WIDTH_PX = int((MAX_X_M - MIN_X_M) * PIXELS_PER_M)  # 384 cols (x)
LIDAR_HIST_MAX_COUNT = 5  # histogram counts are clipped at 5, then /5
BEV_DOWN_SAMPLE_FACTOR = 4  # CenterNet grid 80 x 96, 1 cell = 1 m
MAX_NUM_BBOXES = 90
NUM_YAW_BINS = 12
NUM_RADAR_SENSORS = 4
MAX_RADAR_POINTS_PER_SENSOR = 75
NUM_RADAR_QUERIES = 20
TARGET_POINT_NORMALIZATION = (200.0, 50.0)
MAX_SPEED_MPS = 25.0
TP_POP_DISTANCE_M = 3.25  # the RoutePlanner whose target points are read
TP_DISTANCES_M = tuple(3.0 + 0.25 * i for i in range(29))  # 3.0, 3.25, ..., 10.0 (keys use str(float))

# --- planning labels (post-training, "8_8_8_5") --------------------------------------------------
NUM_WAYPOINTS = 8
WAYPOINT_SPACING_STEPS = 5  # 20 Hz steps between waypoints -> 0.25 s
NUM_ROUTE_POINTS = 10  # 1 m spacing from 2.5 m ahead
TARGET_SPEED_CLASSES_MPS = (
    0.0,
    4.0,
    8.0,
    10.0,
    13.88888888,
    16.0,
    17.77777777,
    20.0,
)  # LEAD target_speed_classes, digit for digit
NUM_COMMANDS = 6  # one-hot of RoadOption 1..6 (VOID -> LANEFOLLOW)


class BoxClass(IntEnum):
    """TransfuserBoundingBoxClass: the class column of packed boxes and the CenterNet heatmap channel."""

    VEHICLE = 0
    WALKER = 1
    TRAFFIC_LIGHT = 2
    STOP_SIGN = 3
    SPECIAL = 4
    OBSTACLE = 5
    PARKING = 6
    BIKER = 7


NUM_BOX_CLASSES = len(BoxClass)


class BoxField(IntEnum):
    """Columns of a packed box array (TransfuserBoundingBoxIndex), image (BEV pixel) coordinates."""

    X = 0  # (x_m - MIN_X_M) * PIXELS_PER_M, column in the 320 x 384 BEV
    Y = 1  # (y_m - MIN_Y_M) * PIXELS_PER_M, row
    W = 2  # half extent along the box's x, pixels
    H = 3  # half extent along the box's y, pixels
    YAW = 4  # radians, ego frame
    VELOCITY = 5  # m/s
    BRAKE = 6  # 0 / 1
    CLASS = 7  # BoxClass
    NUM_RADAR_POINTS = 8


NUM_BOX_FIELDS = len(BoxField)


class SemanticClass(IntEnum):
    """TransfuserSemanticSegmentationClass: values of semantics/NNNN.png (0..9)."""

    UNLABELED = 0
    VEHICLE = 1
    ROAD = 2
    TRAFFIC_LIGHT = 3
    PEDESTRIAN = 4
    ROAD_LINE = 5
    OBSTACLE = 6
    SPECIAL_VEHICLE = 7
    STOP_SIGN = 8
    BIKER = 9


NUM_SEMANTIC_CLASSES = len(SemanticClass)


class BevSemanticClass(IntEnum):
    """TransfuserBEVSemanticClass: HD map classes 0..3 plus occupancy classes 1..9 shifted by 3."""

    UNLABELED = 0
    ROAD = 1
    LANE_MARKERS = 2
    STOP_SIGNS = 3
    VEHICLE = 4
    WALKER = 5
    OBSTACLE = 6
    PARKING_VEHICLE = 7
    SPECIAL_VEHICLE = 8
    BIKER = 9
    TRAFFIC_GREEN = 10
    TRAFFIC_RED_NORMAL = 11
    TRAFFIC_RED_NOT_NORMAL = 12


NUM_BEV_SEMANTIC_CLASSES = len(BevSemanticClass)

# ChauffeurNet hdmap id -> BEV semantic class (CHAFFEURNET_TO_TRANSFUSER_BEV_SEMANTIC_CONVERTER)
HDMAP_TO_BEV_SEMANTIC = (0, 1, 0, 2, 2, 3, 0, 0, 0)

SCENARIO_TYPES = (
    "Accident",
    "AccidentTwoWays",
    "BlockedIntersection",
    "ConstructionObstacle",
    "ConstructionObstacleTwoWays",
    "ControlLoss",
    "CrossJunctionDefectTrafficLight",
    "CrossingBicycleFlow",
    "DynamicObjectCrossing",
    "EnterActorFlow",
    "EnterActorFlowV2",
    "HardBreakRoute",
    "HazardAtSideLane",
    "HazardAtSideLaneTwoWays",
    "HighwayCutIn",
    "HighwayExit",
    "InterurbanActorFlow",
    "InterurbanAdvancedActorFlow",
    "InvadingTurn",
    "MergerIntoSlowTraffic",
    "MergerIntoSlowTrafficV2",
    "NonSignalizedJunctionLeftTurn",
    "NonSignalizedJunctionLeftTurnEnterFlow",
    "NonSignalizedJunctionRightTurn",
    "noScenarios",
    "OppositeVehicleRunningRedLight",
    "OppositeVehicleTakingPriority",
    "ParkedObstacle",
    "ParkedObstacleTwoWays",
    "ParkingCrossingPedestrian",
    "ParkingCutIn",
    "ParkingExit",
    "PedestrianCrossing",
    "PriorityAtJunction",
    "RedLightWithoutLeadVehicle",
    "SequentialLaneChange",
    "SignalizedJunctionLeftTurn",
    "SignalizedJunctionLeftTurnEnterFlow",
    "SignalizedJunctionRightTurn",
    "StaticCutIn",
    "T_Junction",
    "VanillaNonSignalizedTurn",
    "VanillaNonSignalizedTurnEncounterStopsign",
    "VanillaSignalizedTurnEncounterGreenLight",
    "VanillaSignalizedTurnEncounterRedLight",
    "VehicleOpensDoorTwoWays",
    "VehicleTurningRoute",
    "VehicleTurningRoutePedestrian",
    "YieldToEmergencyVehicle",
    "NA",
)

EMERGENCY_MESHES = (
    "vehicle.dodge.charger_police",
    "vehicle.dodge.charger_police_2020",
    "vehicle.ford.ambulance",
    "vehicle.carlamotors.firetruck",
)
BICYCLE_MESHES = ("vehicle.diamondback.century", "vehicle.gazelle.omafiets", "vehicle.bh.crossbike")
MOTORCYCLE_MESHES = (
    "vehicle.harley-davidson.low_rider",
    "vehicle.kawasaki.ninja",
    "vehicle.vespa.zx125",
    "vehicle.yamaha.yzf",
)
# two-wheelers: LEAD 8bb1118 labels all of them BIKER, 4489176 only the bicycles (cache.labels.rules)
BIKER_MESHES = BICYCLE_MESHES + MOTORCYCLE_MESHES

# results.json statuses that always fail a route (LEAD §2.3), besides any infraction
FAILED_STATUSES = (
    "Failed",
    "Failed - Agent couldn't be set up",
    "Failed - Simulation crashed",
    "Failed - Agent crashed",
)
RESULT_INFRACTION_KEYS = (
    "collisions_layout",
    "collisions_pedestrian",
    "collisions_vehicle",
    "red_light",
    "stop_infraction",
    "outside_route_lanes",
    "min_speed_infractions",
    "yield_emergency_vehicle_infractions",
    "scenario_timeouts",
    "route_dev",
    "vehicle_blocked",
    "route_timeout",
)

# meta keys kesai-labs/lead 4489176 no longer writes (autonomousvision/lead 8bb1118 did; sources.lead_schema)
META_KEYS_REMOVED_IN_CURRENT = (
    "average_traffic_speed",
    "max_traffic_speed",
    "max_adversarial_speed",
    "dist_to_road_discontinuity",
    "reduce_speed_discontinuous_road",
    "reduce_speed_high_route_curvature",
)
