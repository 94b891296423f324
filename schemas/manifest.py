"""Arrow schemas of the shard cache manifest (samples, shards, failures), defined once and versioned.

Every manifest Parquet file carries `lead_stream.manifest_version` and `lead_stream.table` in its key-value
metadata; `manifest.json` repeats the version. Readers refuse other versions (rebuild the cache).
"""

from __future__ import annotations

import pyarrow as pa

MANIFEST_VERSION = 1
MANIFEST_VERSION_KEY = b"lead_stream.manifest_version"
MANIFEST_TABLE_KEY = b"lead_stream.table"

SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # "<route_id with . → _>/<frame_idx:04d>"
        pa.field("route_id", pa.string(), nullable=False),  # "<Scenario>/<route_dir>"
        pa.field("frame_idx", pa.int32(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # file name in the cache dir, "shard-NNNNNN.tar"
        pa.field("offset", pa.int64(), nullable=False),  # byte offset of the sample's first tar header
        pa.field("size_bytes", pa.int64(), nullable=False),  # through the padding of its last member
        pa.field("sha256", pa.string(), nullable=False),  # of (member name, NUL, payload)* in member order
        pa.field("planning_valid", pa.bool_(), nullable=False),  # the sample's targets planning_valid
        pa.field("route_fingerprint", pa.string(), nullable=False),  # index routes.parquet fingerprint used
    ],
)

SHARDS_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),  # "shard-NNNNNN.tar"
        pa.field("route_id", pa.string(), nullable=False),  # shards never mix routes (incremental reuse)
        pa.field("route_fingerprint", pa.string(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),  # file size
        pa.field("sha256", pa.string(), nullable=False),  # of the whole file
    ],
)

FAILURES_SCHEMA = pa.schema(
    [
        pa.field("route_id", pa.string(), nullable=False),
        pa.field("frame_idx", pa.int32(), nullable=False),
        pa.field("file", pa.string(), nullable=False),  # offending file (relative to the data root if inside)
        pa.field("reason", pa.string(), nullable=False),  # what is wrong with it
    ],
)

ROUTES_SCHEMA = pa.schema(
    [
        pa.field("route_id", pa.string(), nullable=False),
        pa.field("route_fingerprint", pa.string(), nullable=False),  # index fingerprint the samples come from
        pa.field("frames_digest", pa.string(), nullable=False),  # blake2b of the selected frame numbers
        pa.field("part", pa.string(), nullable=False),  # samples.parquet/<part> of its samples ("" = none)
        pa.field("num_samples", pa.int64(), nullable=False),
    ],
)

MANIFEST_SCHEMAS: dict[str, pa.Schema] = {
    "samples": SAMPLES_SCHEMA,
    "shards": SHARDS_SCHEMA,
    "failures": FAILURES_SCHEMA,
    "routes": ROUTES_SCHEMA,
}


def manifest_table(rows: list[dict], name: str) -> pa.Table:
    """Rows (dicts) → a table with exactly schema `name` and the version metadata.

    Raises:
        KeyError: a row lacks a schema column.  pyarrow.ArrowInvalid: a value does not fit its column type.
    """
    schema = MANIFEST_SCHEMAS[name]
    columns = {f.name: [row[f.name] for row in rows] for f in schema}
    meta = {MANIFEST_VERSION_KEY: str(MANIFEST_VERSION).encode(), MANIFEST_TABLE_KEY: name.encode()}
    return pa.table(columns, schema=schema.with_metadata(meta))


def manifest_version_problem(schema: pa.Schema, name: str) -> str | None:
    """None if `schema` is manifest table `name` of this version, else what is wrong."""
    meta = schema.metadata or {}
    found = meta.get(MANIFEST_VERSION_KEY, b"?").decode()
    table = meta.get(MANIFEST_TABLE_KEY, b"?").decode()
    if found != str(MANIFEST_VERSION) or table != name:
        return (
            f"expected {name} manifest table v{MANIFEST_VERSION}, found {table} v{found} (rebuild the cache)"
        )
    return None
