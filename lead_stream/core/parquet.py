"""Parquet file → Arrow table (or schema), with a damaged file turned into a `LeadFormatError` naming it.

Every table lead-stream reads back (index tables, bucket tables, manifest tables) goes through here, so a
truncated or overwritten file ends in `error: <path>: unreadable Parquet (...); <repair>` from every command,
never in a pyarrow/Polars traceback. `repair` is the command that rebuilds the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lead_stream.core.errors import LeadFormatError

_READ_ERRORS = (pa.ArrowException, OSError)


def _unreadable(path: Path, error: Exception, repair: str) -> LeadFormatError:
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return LeadFormatError(path, f"unreadable Parquet ({detail}); {repair}")


def read_table(
    path: Path,
    *,
    repair: str,
    columns: Sequence[str] | None = None,
    filters: Any = None,
    read_dictionary: Sequence[str] | None = None,
) -> pa.Table:
    """`pq.read_table(path, columns, filters, read_dictionary)` (the latter: columns kept dictionary coded).

    Raises:
        LeadFormatError: the file is missing, truncated or not Parquet; the message ends with `repair`.
    """
    path = Path(path)
    if not path.is_file():
        raise LeadFormatError(path, f"missing; {repair}")
    try:
        return pq.read_table(
            path,
            columns=list(columns) if columns else None,
            filters=filters,
            read_dictionary=list(read_dictionary) if read_dictionary else None,
        )
    except _READ_ERRORS as error:
        raise _unreadable(path, error, repair) from None


def read_schema(path: Path, *, repair: str) -> pa.Schema:
    """`pq.read_schema(path)` (the footer only).

    Raises:
        LeadFormatError: as `read_table`.
    """
    path = Path(path)
    if not path.is_file():
        raise LeadFormatError(path, f"missing; {repair}")
    try:
        return pq.read_schema(path)
    except _READ_ERRORS as error:
        raise _unreadable(path, error, repair) from None
