"""Where the index tables live (`<data_root>/index/{routes,frames}.parquet`, `buckets/<collection>.parquet`)
and how they are read (schema-version checked) and written (atomically)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lead_stream.core import parquet
from lead_stream.core.atomic import atomic_path, list_finished
from lead_stream.core.errors import LeadFormatError
from lead_stream.schemas.tables import SchemaError, check_version

INDEX_DIR = "index"
BUCKETS_DIR = "buckets"
COLLECTION_KEY = b"lead_stream.collection"
LEAD_NAME_KEY = b"lead_stream.lead_name"
PARAMS_KEY = b"lead_stream.params"
DEFINITION_KEY = b"lead_stream.definition"


def index_dir(data_root: Path) -> Path:
    """`<data_root>/index`."""
    return Path(data_root) / INDEX_DIR


def table_path(data_root: Path, name: str) -> Path:
    """Path of index table `name`: "routes", "frames", or a bucket collection name."""
    if name in ("routes", "frames"):
        return index_dir(data_root) / f"{name}.parquet"
    return index_dir(data_root) / BUCKETS_DIR / f"{name}.parquet"


def read_checked(path: Path, name: str) -> pa.Table:
    if not path.is_file():
        raise LeadFormatError(
            path, f"missing (build the index first: lead-stream index {path.parent.parent})"
        )
    table = parquet.read_table(path, repair=f"rebuild it: lead-stream index {path.parent.parent}")
    try:
        check_version(table.schema, name, path)
    except SchemaError as error:
        raise LeadFormatError(path, str(error).split(": ", 1)[-1]) from None
    return table


def collection_names(data_root: Path) -> list[str]:
    """Names of the bucket collections written under index/buckets/ (directories of parts, or single files
    from before parts)."""
    return [p.stem for p in list_finished(index_dir(data_root) / BUCKETS_DIR, "*.parquet")]


def write_parquet(table: pa.Table, path: Path, compression: str) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression)
