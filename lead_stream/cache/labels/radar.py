"""Raw radar points and box labels of one frame → the stored radar points and LEAD's radar detection labels."""

from __future__ import annotations

import numpy as np

from lead_stream.core import geometry
from lead_stream.core.constants import (
    MAX_RADAR_POINTS_PER_SENSOR,
    MIN_X_M,
    MIN_Y_M,
    NUM_RADAR_QUERIES,
    NUM_RADAR_SENSORS,
    PIXELS_PER_M,
    BoxClass,
    BoxField,
)

RADAR_PRIORITY = (BoxClass.SPECIAL, BoxClass.VEHICLE, BoxClass.WALKER, BoxClass.OBSTACLE, BoxClass.PARKING)


def radar_points(radar: dict[str, np.ndarray]) -> np.ndarray:
    """Per sensor radar1..4: points inside the closed BEV box, first 75, plus sensor id 0..3.

    Returns:
        (n, 5) float16 [x, y, z, v, sensor_id], sensors in order, n <= 300 (no padding). float16 is LEAD's
        own radar dtype, so values are exact (the loader widens them to float32).
    """
    parts = []
    for sensor_idx in range(NUM_RADAR_SENSORS):
        points = np.asarray(radar[f"radar{sensor_idx + 1}"]).reshape(-1, 4)
        points = points[geometry.in_bev(points.astype(np.float32))][:MAX_RADAR_POINTS_PER_SENSOR]
        sensor_id = np.full((len(points), 1), sensor_idx, dtype=np.float16)
        parts.append(np.concatenate([points.astype(np.float16), sensor_id], axis=1))
    return np.concatenate(parts, axis=0).astype(np.float16, copy=False)


def radar_detection_labels(boxes_px: np.ndarray) -> np.ndarray:
    """LEAD's `parse_radar_detection_labels`: boxes with radar hits by (speed, class priority, hits), desc.

    Returns:
        (20, 4) float32 [x_m, y_m, v_mps, valid], zero rows after the last detection.
    """
    out = np.zeros((NUM_RADAR_QUERIES, 4), dtype=np.float32)
    boxes = boxes_px.astype(np.float32).copy()
    boxes[:, :4] /= PIXELS_PER_M
    boxes[:, :2] += np.array([MIN_X_M, MIN_Y_M], dtype=np.float32)
    nonzero = (boxes[:, BoxField.X] != 0.0) | (boxes[:, BoxField.Y] != 0.0)
    keep = nonzero & (boxes[:, BoxField.NUM_RADAR_POINTS] > 0)
    boxes = boxes[keep]
    if len(boxes) == 0:
        return out
    priority = {int(c): i for i, c in enumerate(RADAR_PRIORITY)}
    class_rank = np.array([priority.get(int(c), len(RADAR_PRIORITY)) for c in boxes[:, BoxField.CLASS]])
    order = np.lexsort((-boxes[:, BoxField.NUM_RADAR_POINTS], class_rank, -boxes[:, BoxField.VELOCITY]))
    chosen = boxes[order][:NUM_RADAR_QUERIES]
    out[: len(chosen), 0] = chosen[:, BoxField.X]
    out[: len(chosen), 1] = chosen[:, BoxField.Y]
    out[: len(chosen), 2] = chosen[:, BoxField.VELOCITY]
    out[: len(chosen), 3] = 1.0
    return out
