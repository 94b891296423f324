"""Arrow schemas of the index tables (routes, frames, bucket members), defined once and versioned.

`lead_stream.index` builds every table column by column and passes it through `conform()`, which casts to
the schema below and fails with a clear message on a missing column or an impossible cast. The Parquet
key-value metadata of each file carries `schema_version`; readers refuse other versions.

Frame columns from the meta pickle: only the scalar keys in `META_COLUMNS` (LEAD_FORMAT §1.7) become
columns. Unknown extra keys and non-scalar values (arrays, target-point lists, dicts) are ignored on
purpose; `None` becomes null, and a non-finite float (LEAD's loader turns None distances into inf) is
stored as null too, never as inf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: routes gain source/lead_schema/depth ratio; frames gain dataset_information scalars
SCHEMA_VERSION_KEY = b"lead_stream.schema_version"  # Parquet key-value metadata key of every index table
TABLE_KEY = b"lead_stream.table"  # "routes" | "frames" | "bucket_members"
BUILD_ID_KEY = b"lead_stream.build_id"  # same value in routes/frames of one build


class MetaColumn(NamedTuple):
    """One scalar meta key kept as a frames column."""

    key: str  # key in metas/NNNN.pkl
    column: str  # column name in frames.parquet (the key, unless a unit suffix is added)
    type: pa.DataType  # Arrow type; ints/floats/bools/strings only


def _cols(kind: pa.DataType, names: str) -> list[MetaColumn]:
    return [MetaColumn(name, name, kind) for name in names.split()]


_B, _I, _F, _S = pa.bool_(), pa.int64(), pa.float64(), pa.string()

# Fixed list from LEAD_FORMAT §1.7; order = column order in frames.parquet.
META_COLUMNS: tuple[MetaColumn, ...] = tuple(
    # --- identity / environment ---
    _cols(_S, "town weather_setting current_active_scenario_type previous_active_scenario_type")
    + [MetaColumn("scenario", "meta_scenario", _S)]  # route config's scenario; the folder's is `scenario`
    + _cols(_I, "target_dataset visual_visibility jpeg_storage_quality")
    # --- ego state ---
    + _cols(
        _F,
        "speed target_speed theta privileged_yaw steer throttle "
        "accel_x accel_y accel_z angular_velocity_x angular_velocity_y angular_velocity_z "
        "target_speed_limit speed_limit last_encountered_speed_limit_sign second_highest_speed "
        "second_highest_speed_limit max_traffic_speed max_adversarial_speed average_traffic_speed "
        "privileged_acceleration privileged_rotation_speed",
    )
    + _cols(_B, "brake changed_route")
    # --- situation flags ---
    + _cols(
        _B,
        "stop_sign_hazard walker_hazard light_hazard vehicle_hazard stop_sign_close walker_close "
        "is_intersection is_junction reduce_speed_discontinuous_road "
        "reduce_speed_high_route_curvature "
        "does_emergency_brake_for_pedestrians construction_obstacle_two_ways_stuck "
        "accident_two_ways_stuck parked_obstacle_two_ways_stuck vehicle_opens_door_two_ways_stuck "
        "vehicle_opened_door rear_danger_8 rear_danger_16 brake_cutin "
        "emergency_brake_for_special_vehicle slower_bad_visibility slower_clutterness "
        "slower_occluded_junction over_head_traffic_light europe_traffic_light",
    )
    + _cols(
        _I,
        "vehicle_affecting_id walker_affecting_id walker_close_id junction_id road_id lane_id "
        "ego_lane_id num_parking_vehicles_in_proximity num_dangerous_adversarial "
        "num_safe_adversarial "
        "num_ignored_adversarial rear_adversarial_id speed_reduced_by_obj_id",
    )
    + _cols(
        _S,
        "lane_type_str lane_change_str left_lane_marking_color_str right_lane_marking_color_str "
        "left_lane_marking_type_str right_lane_marking_type_str traffic_light_state "
        "vehicle_door_side speed_reduced_by_obj_type",
    )
    # --- distances (m; None -> null) and route shape ---
    + _cols(
        _F,
        "distance_to_next_junction dist_to_junction dist_to_road_discontinuity "
        "dist_to_construction_site dist_to_accident_site dist_to_parked_obstacle "
        "dist_to_vehicle_opens_door dist_to_cutin_vehicle dist_to_pedestrian dist_to_biker "
        "distance_to_intersection_index_ego signed_dist_to_lane_change route_left_length "
        "distance_ego_to_route speed_reduced_by_obj_distance route_curvature ego_lane_width "
        "target_lane_width",
    )
    # --- perturbation (constant per route) ---
    + [
        MetaColumn("perturbation_translation", "perturbation_translation_m", _F),
        MetaColumn("perturbation_rotation", "perturbation_rotation_deg", _F),
    ]
    # --- current LEAD schema only (kesai-labs/lead 4489176): dataset_information / sensor_information ---
    + [
        MetaColumn("dataset_information.save_depth_resolution_ratio", "depth_resolution_ratio", _I),
        MetaColumn("dataset_information.save_depth_bits", "depth_bits", _I),
        MetaColumn("dataset_information.data_save_freq", "data_save_freq", _I),
        MetaColumn("sensor_information.num_cameras", "num_cameras", _I),
        MetaColumn("sensor_information.num_radar_sensors", "num_radar_sensors", _I),
    ]
)
# meta keys holding dicts whose scalars become columns ("<dict>.<key>" in META_COLUMNS); legacy metas lack
# them (null). `target_dataset` is read from the top level (legacy) or from dataset_information (current).
NESTED_META_DICTS = ("dataset_information", "sensor_information")

# Per-frame files whose existence is recorded as has_<modality> (folder names of LEAD_FORMAT §1.4).
MODALITIES: tuple[str, ...] = (
    "rgb",
    "rgb_perturbated",
    "semantics",
    "semantics_perturbated",
    "depth",
    "depth_perturbated",
    "hdmap",
    "hdmap_perturbated",
    "lidar",
    "radar",
    "radar_perturbated",
    "bboxes",
    "metas",
)

INFRACTION_COLUMNS: tuple[str, ...] = tuple(
    f"num_{key}"
    for key in (
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
)  # one per constants.RESULT_INFRACTION_KEYS, same order (checked in tests)

ROUTES_SCHEMA = pa.schema(
    [
        pa.field("route_id", pa.string(), nullable=False),  # "<Scenario>/<route_dir>"
        pa.field("scenario", pa.string(), nullable=False),  # parent folder name
        pa.field("source", pa.string(), nullable=False),  # copy read: folder, or "<zip>!<member prefix>"
        pa.field("source_kind", pa.string(), nullable=False),  # "folder" | "zip"
        pa.field("num_sources", pa.int32(), nullable=False),  # copies found (extracted and/or zipped)
        pa.field("lead_schema", pa.string()),  # "legacy" (8bb1118) | "current" (4489176); null: no metas
        pa.field("depth_resolution_ratio", pa.int32()),  # depth PNG = 1/ratio of 384 x 1152 (legacy: 4)
        pa.field("town", pa.string()),  # the metas' town, else from the route dir
        pa.field("status", pa.string()),  # results.json status; null if no results.json
        pa.field("score_composed", pa.float64()),
        pa.field("score_route", pa.float64()),
        pa.field("score_penalty", pa.float64()),
        pa.field("num_infractions", pa.int64()),
        *[pa.field(name, pa.int64()) for name in INFRACTION_COLUMNS],
        pa.field("route_length_m", pa.float64()),  # results.json meta.route_length
        pa.field("duration_game_s", pa.float64()),  # results.json meta.duration_game
        pa.field("num_frames", pa.int32(), nullable=False),  # files in bboxes/ (LEAD's definition)
        pa.field("num_metas", pa.int32(), nullable=False),  # files in metas/ (cross-check)
        pa.field("has_results", pa.bool_(), nullable=False),
        pa.field("has_meta0", pa.bool_(), nullable=False),
        pa.field("usable", pa.bool_(), nullable=False),  # LEAD §2.3 rule and readable
        pa.field("reason", pa.string()),  # why not usable; null when usable
        pa.field("completed_but_failed", pa.bool_(), nullable=False),  # LEAD route_completed_but_fail
        pa.field("read_error", pa.string()),  # "<file relative to data root>: <problem>"
        pa.field("fingerprint", pa.string(), nullable=False),  # Route.fingerprint() (names, sizes, mtimes)
        pa.field("stat_stamp", pa.string(), nullable=False),  # cheaper stat hash checked first on re-index
        pa.field("content_hash", pa.string()),  # index --verify-content; null: never hashed
        *[pa.field(f"has_{m}", pa.bool_(), nullable=False) for m in MODALITIES],  # folder exists
    ],
)

FRAMES_SCHEMA = pa.schema(
    [
        pa.field("route_id", pa.string(), nullable=False),
        pa.field("scenario", pa.string(), nullable=False),
        pa.field("frame_idx", pa.int32(), nullable=False),  # NNNN of the file names
        pa.field("num_frames", pa.int32(), nullable=False),  # of the route
        pa.field("frames_from_start", pa.int32(), nullable=False),  # = frame_idx
        pa.field("frames_to_end", pa.int32(), nullable=False),  # = num_frames - 1 - frame_idx
        pa.field("usable", pa.bool_(), nullable=False),  # the route's
        pa.field("completed_but_failed", pa.bool_(), nullable=False),  # the route's: LEAD's Failed collection
        *[pa.field(c.column, c.type) for c in META_COLUMNS],
        *[pa.field(f"has_{m}", pa.bool_(), nullable=False) for m in MODALITIES],  # this frame's file exists
    ],
)

BUCKET_MEMBERS_SCHEMA = pa.schema(
    [
        pa.field("route_id", pa.string(), nullable=False),
        pa.field("frame_idx", pa.int32(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("rate", pa.float64(), nullable=False),  # LEAD's multiplier: a bucket gives floor(len*rate)
    ],
)

assert len(set(FRAMES_SCHEMA.names)) == len(FRAMES_SCHEMA.names), "duplicate frames column"

SCHEMAS: dict[str, pa.Schema] = {
    "routes": ROUTES_SCHEMA,
    "frames": FRAMES_SCHEMA,
    "bucket_members": BUCKET_MEMBERS_SCHEMA,
}


class SchemaError(ValueError):
    """A table does not match its declared schema (a bug in the writer, or a foreign/old file)."""


def conform(
    table: pa.Table, name: str, *, metadata: Mapping[bytes | str, bytes | str] | None = None
) -> pa.Table:
    """Reorder and cast `table` to schema `name`, attaching the version metadata.

    Args:
        table: the built table (extra columns are an error, missing ones too).
        name: "routes", "frames" or "bucket_members".
        metadata: extra Parquet key-value metadata to store.

    Returns:
        The table with exactly the declared schema.

    Raises:
        SchemaError: on missing/extra columns, a failed cast or nulls in a non-nullable column.
    """
    schema = SCHEMAS[name]
    present, declared = set(table.column_names), set(schema.names)
    missing = [f.name for f in schema if f.name not in present]
    extra = [c for c in table.column_names if c not in declared]
    if missing or extra:
        raise SchemaError(f"{name} table v{SCHEMA_VERSION}: missing columns {missing}, unexpected {extra}")
    columns = []
    for field in schema:
        column = table.column(field.name)
        try:
            column = column.cast(field.type) if column.type != field.type else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise SchemaError(
                f"{name}.{field.name}: cannot cast {column.type} to {field.type}: {error}"
            ) from None
        if not field.nullable and column.null_count:
            raise SchemaError(f"{name}.{field.name}: {column.null_count} nulls in a non-nullable column")
        columns.append(column)
    meta = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: name.encode()}
    for key, value in (metadata or {}).items():
        key = key.encode() if isinstance(key, str) else key
        meta[key] = value.encode() if isinstance(value, str) else value
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(meta))


def check_version(schema: pa.Schema, name: str, path: object) -> None:
    """Raise SchemaError unless `schema` (read from `path`) is table `name` at SCHEMA_VERSION."""
    meta = schema.metadata or {}
    found = meta.get(SCHEMA_VERSION_KEY, b"?").decode()
    table = meta.get(TABLE_KEY, b"?").decode()
    if found != str(SCHEMA_VERSION) or table != name:
        raise SchemaError(
            f"{path}: expected {name} table schema v{SCHEMA_VERSION}, found {table} v{found} "
            f"(rebuild with `lead-stream index --force`)"
        )
