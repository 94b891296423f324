"""Stage 1, sources: one raw LEAD route → Python objects (dicts, numpy arrays, JPEG bytes), read unchanged and
never written, wherever it lives: an extracted folder or a zip read in place (local or over HTTP/fsspec).

`discover_sources(data_root)` maps route ids to the copies found (folders below `data/`, zips anywhere
below the data root or a remote root), `Route(data_root, route_id, source=...)` reads one route's files
(`results.json`, metas, boxes, camera, semantics, depth, hdmap, LiDAR, radar; normal and perturbated)
through its `stores.RouteStore` (`FolderStore` or `ZipStore` over `zips.ZipArchive` and a
`byte_sources.ByteSource`), `lead_schema` tells LEAD's two meta schemas apart, and `route_usability` is
LEAD's route filter. Every unreadable file raises `LeadFormatError(path, problem)`. The per-format readers
(`pickles`, `laz`, `npz`, `png`) sit beside `route`.
"""

from lead_stream.sources.discovery import discover_routes, discover_sources, route_usability
from lead_stream.sources.lead_schema import CURRENT, LEGACY, lead_schema_of
from lead_stream.sources.pickles import read_lzma_pickle
from lead_stream.sources.route import Route
from lead_stream.sources.stores import FolderStore, RouteStore, ZipStore, open_store

__all__ = [
    "CURRENT",
    "LEGACY",
    "FolderStore",
    "Route",
    "RouteStore",
    "ZipStore",
    "discover_routes",
    "discover_sources",
    "lead_schema_of",
    "open_store",
    "read_lzma_pickle",
    "route_usability",
]
