"""A legacy LEAD meta (autonomousvision/lead 8bb1118) → the current one (kesai-labs/lead 4489176), in place.

The synthetic writer builds every meta in the legacy form; for `lead_version="current"` this adds
`dataset_information` and `sensor_information` (LEAD's calibration of our rig), puts raw GNSS in
`noisy_pos_global` (the Kalman-filtered value moves to `filtered_pos_global`), moves `target_dataset` and drops
the keys current LEAD no longer writes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lead_stream.core.constants import (
    CAMERA_FOV_DEG,
    CAMERA_HEIGHT_PX,
    CAMERA_POSITIONS_M,
    CAMERA_WIDTH_PX,
    CAMERA_YAWS_DEG,
    DATA_SAVE_FREQ,
    META_KEYS_REMOVED_IN_CURRENT,
    NUM_CAMERAS,
    NUM_RADAR_SENSORS,
)
from lead_stream.synthetic.lidar import RADAR_MOUNTS
from lead_stream.synthetic.world import _World

GNSS_NOISE_M = 0.5  # raw GNSS noise (current schema's noisy_pos_global)


def to_current_schema(meta: dict[str, Any], world: _World, step: int) -> None:
    """Turn a legacy meta (autonomousvision/lead 8bb1118) into the current one (kesai-labs/lead 4489176):
    dataset_information and sensor_information, raw GNSS in noisy_pos_global (Kalman-filtered in
    filtered_pos_global), target_dataset moved, six keys dropped."""
    gnss_rng = np.random.default_rng([world.stream_seed[0], world.stream_seed[1], 4, step])
    filtered = list(meta["noisy_pos_global"])
    meta["filtered_pos_global"] = filtered
    meta["noisy_pos_global"] = [float(v + gnss_rng.normal(0.0, GNSS_NOISE_M)) for v in filtered]
    meta["dataset_information"] = {
        "save_depth_lower_resolution": True,
        "save_depth_resolution_ratio": 4,
        "save_depth_bits": 8,
        "save_only_non_ground_lidar": True,
        "target_dataset": int(meta.pop("target_dataset")),
        "data_save_freq": DATA_SAVE_FREQ,
        "save_grouped_semantic": True,
    }
    meta["sensor_information"] = {
        "lidar_pos_1": [0.0, 0.0, 2.5],
        "lidar_rot_1": [0.0, 0.0, -90.0],
        "lidar_pos_2": [0.0, 0.0, 2.5],
        "lidar_rot_2": [0.0, 0.0, -270.0],
        "lidar_accumulation": True,
        "num_cameras": NUM_CAMERAS,
        "camera_calibration": {
            i + 1: {
                "pos": list(CAMERA_POSITIONS_M[i]),
                "rot": [0.0, 0.0, float(CAMERA_YAWS_DEG[i])],
                "width": CAMERA_WIDTH_PX,
                "height": CAMERA_HEIGHT_PX,
                "cropped_height": CAMERA_HEIGHT_PX,
                "fov": CAMERA_FOV_DEG,
            }
            for i in range(NUM_CAMERAS)
        },
        "num_radar_sensors": NUM_RADAR_SENSORS,
        "radar_calibration": {
            str(i + 1): {"pos": list(pos), "rot": [0.0, 0.0, float(yaw)], "horz_fov": 90, "vert_fov": 0.1}
            for i, (*pos, yaw) in enumerate(RADAR_MOUNTS)
        },
    }
    for key in META_KEYS_REMOVED_IN_CURRENT:
        meta.pop(key, None)
