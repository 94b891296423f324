"""A shard config + the preprocessing code → the pipeline id that names its cache directory.

`pipeline_id` hashes the content-affecting config, `features.PREPROCESS_VERSION`, the member names, the
manifest version and the source of every preprocessing module (`PREPROCESSING_SOURCES`: the cache's own, and
the raw-file decoders of `sources` whose values become sample bytes), so a code or config change starts a new
cache directory instead of silently reusing stale samples. The transport below the decoders (folder / zip /
HTTP stores, discovery) is not hashed: it hands over the same bytes either way (caches byte-identical).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lead_stream.cache import features, frame, labels, targets
from lead_stream.cache.labels import boxes, occupancy, radar, raster, rules
from lead_stream.core import array_filters, codecs, constants, container, geometry, runs
from lead_stream.schemas.manifest import MANIFEST_VERSION
from lead_stream.sources import laz, lead_schema, npz, pickles, png, route

if TYPE_CHECKING:
    from lead_stream.cache.shard import ShardConfig

PREPROCESSING_SOURCES = (
    features,
    frame,
    labels,
    boxes,
    occupancy,
    radar,
    raster,
    rules,
    lead_schema,
    route,
    laz,
    npz,
    pickles,
    png,
    targets,
    geometry,
    constants,
    codecs,
    container,
    array_filters,
    runs,
)


def preprocessing_sha256() -> str:
    """sha256 over the source files of the preprocessing modules (`PREPROCESSING_SOURCES`)."""
    digest = hashlib.sha256()
    for module in PREPROCESSING_SOURCES:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def pipeline_identity(config: ShardConfig) -> dict[str, Any]:
    """Everything the pipeline id hashes (also stored in manifest.json)."""
    return {
        "config": config.content(),
        "preprocess_version": features.PREPROCESS_VERSION,
        "preprocessing_sha256": preprocessing_sha256(),
        "members": list(features.MEMBER_NAMES),
        "manifest_version": MANIFEST_VERSION,
    }


def pipeline_id(config: ShardConfig) -> str:
    """16 hex chars naming the cache directory of `config` with the current preprocessing code."""
    blob = json.dumps(pipeline_identity(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
