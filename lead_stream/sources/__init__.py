"""Stage 1, sources: one raw LEAD route on disk → Python objects (dicts, numpy arrays, JPEG bytes), read
unchanged and never written.

`discover_routes(data_root)` lists the route ids, `Route(data_root, route_id)` reads one route's files
(`results.json`, metas, boxes, camera, semantics, depth, hdmap, LiDAR, radar; normal and perturbated),
and `route_usability` is LEAD's route filter. Every unreadable file raises `LeadFormatError(path, problem)`.
The per-format readers (`pickles`, `laz`, `npz`, `png`) sit beside `route`.
"""

from lead_stream.sources.discovery import discover_routes, route_usability
from lead_stream.sources.pickles import read_lzma_pickle
from lead_stream.sources.route import Route

__all__ = ["Route", "discover_routes", "read_lzma_pickle", "route_usability"]
