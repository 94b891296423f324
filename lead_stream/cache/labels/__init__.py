"""Raw LEAD boxes, hdmap and radar of one frame → label arrays in the BEV frame (pure, hand-testable).

Input: bboxes/NNNN.pkl dicts and the frame meta (true ego frame), a (256, 256) ChauffeurNet hdmap, radar
point arrays. Output: `box_labels` (n, 9) BoxField rows in BEV pixels and `box_waypoints` (`boxes`),
`bev_occupancy` (320, 384) classes and `hdmap_to_bev` / `merge_bev_semantic` BEV semantics (`occupancy`),
`radar_points` and `radar_detection_labels` (`radar`). Semantics follow LEAD's `CARLAData` (LEAD_FORMAT
§4.1 step 10; §4.4); LEAD's constants are in `rules`.
"""

from lead_stream.cache.labels.boxes import box_labels, box_labels_and_sources, box_waypoints
from lead_stream.cache.labels.occupancy import (
    OCCUPANCY_TO_BEV_OFFSET,
    OccupancyClass,
    bev_occupancy,
    hdmap_to_bev,
    merge_bev_semantic,
)
from lead_stream.cache.labels.radar import radar_detection_labels, radar_points

__all__ = [
    "OCCUPANCY_TO_BEV_OFFSET",
    "OccupancyClass",
    "bev_occupancy",
    "box_labels",
    "box_labels_and_sources",
    "box_waypoints",
    "hdmap_to_bev",
    "merge_bev_semantic",
    "radar_detection_labels",
    "radar_points",
]
