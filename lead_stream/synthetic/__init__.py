"""Seed → a small LEAD data root on disk, in exactly LEAD's raw layout (LEAD_FORMAT §1, §10).

`write_synthetic_lead(data_root, num_routes=..., num_frames=..., seed=...)` writes
`<data_root>/data/<Scenario>/<Town>_Rep0_<routefile>_route<i>_<MM>_<DD>_<hh>_<mm>_<ss>/` routes with
results.json, lzma-pickled metas/bboxes, JPEG/PNG cameras (normal and perturbated), LAZ LiDAR and NPZ radar.
Scenes are coherent: the ego follows a curving three-lane road at 20 Hz (a frame is saved every 5th step)
and, on long routes, stops at a red light; vehicles, walkers and parked cars move along the same road and
appear consistently in the boxes, LiDAR, radar, camera images and semantics; the HD map shows the road.
Every frame depends only on (seed, route, frame), so frame ranges are written by parallel processes and
the same seed gives byte-identical files (no wall clock anywhere). results.json is written last.

Modules: world (route specs, road, ego motion, actors) → render (cameras, semantics, depth, HD map),
lidar (LiDAR, radar) and labels (boxes, metas, results.json) → writer (frame ranges, process pool,
`write_synthetic_lead`), which turns arrays and dicts into files through encode (JPEG/PNG/LAZ/NPZ/xz);
release zips routes into LEAD's released layout (`zip/<Scenario>/<route>.zip`). Metas follow either LEAD
schema (`lead_version`: "current" = kesai-labs/lead 4489176, the default, or "legacy" = 8bb1118).
"""

from lead_stream.synthetic.release import zip_route, zip_routes
from lead_stream.synthetic.writer import LEAD_VERSIONS, SynthSummary, write_synthetic_lead

__all__ = ["LEAD_VERSIONS", "SynthSummary", "write_synthetic_lead", "zip_route", "zip_routes"]
