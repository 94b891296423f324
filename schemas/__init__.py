"""Arrow schemas of every table lead-stream writes, defined once and versioned (import as lead_stream.schemas)."""

from lead_stream.schemas.tables import (
    BUCKET_MEMBERS_SCHEMA,
    FRAMES_SCHEMA,
    META_COLUMNS,
    MODALITIES,
    ROUTES_SCHEMA,
    SCHEMA_VERSION,
    SchemaError,
    conform,
)

__all__ = [
    "BUCKET_MEMBERS_SCHEMA",
    "FRAMES_SCHEMA",
    "META_COLUMNS",
    "MODALITIES",
    "ROUTES_SCHEMA",
    "SCHEMA_VERSION",
    "SchemaError",
    "conform",
]
