"""Is there nothing for `shard` to do? Answered from metadata only: stamps, small tables, one stat per shard.

A complete cache records in manifest.json the (size, mtime_ns) stamps of the index files it was planned
from (`routes.parquet` and the bucket tables: `input_stamps`). When the index files still carry those stamps
and every shard listed in `shards.parquet` is on disk with its recorded size (and none is in
`verify-failed.json`), the cache is current and `shard` returns without reading a bucket table, the journal
or a sample row. When the stamps differ, `shard` plans from the bucket tables; if that finds nothing to
change (the index was rewritten with the same content), it records the new stamps in `inputs-checked.json`
(tied to this manifest.json by its digest, so it is void once the manifest is rewritten), and the next call
is a metadata-only no-op again. Deep checks (every shard's bytes) are `verify`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from lead_stream.cache.manifest import MANIFEST_FILENAME, VERIFY_FAILED_FILENAME
from lead_stream.cache.manifest_store import CacheState, read_state
from lead_stream.core.atomic import atomic_write_text
from lead_stream.index.tables import table_path

CHECKED_FILENAME = "inputs-checked.json"  # index stamps a planning run found to change nothing
Stamps = dict[str, list[int]]  # table name → [size, mtime_ns] ([-1, -1]: missing)


def input_stamps(data_root: Path, collections: list[str] | tuple[str, ...]) -> Stamps:
    """(size, mtime_ns) of the index files a cache is planned from (routes.parquet, the bucket tables).

    A bucket table stored as parts (a directory) is stamped by its parts: [total size, newest mtime_ns of the
    directory and its parts, number of parts], so a part written, replaced or removed changes the stamp.
    """
    stamps = {}
    for name in ("routes", *collections):
        path = table_path(data_root, name)
        try:
            st = os.stat(path)
            if not stat.S_ISDIR(st.st_mode):
                stamps[name] = [st.st_size, st.st_mtime_ns]
                continue
            parts = [entry.stat() for entry in os.scandir(path) if entry.name.endswith(".parquet")]
            newest = max([st.st_mtime_ns, *(p.st_mtime_ns for p in parts)])
            stamps[name] = [sum(p.st_size for p in parts), newest, len(parts)]
        except FileNotFoundError:
            stamps[name] = [-1, -1]
    return stamps


def verify_failed(cache_dir: Path) -> list[str]:
    """Shards the last `verify` found missing or corrupt (`verify-failed.json`); [] if none recorded."""
    try:
        return list(json.loads((Path(cache_dir) / VERIFY_FAILED_FILENAME).read_text())["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def routes_with_bad_shards(state: CacheState, cache_dir: Path) -> set[str]:
    """Routes with a shard that is missing, has another size than recorded, or that `verify` found corrupt
    (one `os.stat` per listed shard)."""
    corrupt = set(verify_failed(cache_dir))
    prefix = f"{os.fspath(cache_dir)}{os.sep}"
    shards = state.shards
    bad = set()
    for name, rid, size in zip(
        shards.column("shard").to_pylist(),
        shards.column("route_id").to_pylist(),
        shards.column("size_bytes").to_pylist(),
    ):
        try:
            if os.stat(prefix + name).st_size != size or name in corrupt:
                bad.add(rid)
        except FileNotFoundError:
            bad.add(rid)
    return bad


def _manifest_digest(cache_dir: Path) -> str:
    return hashlib.blake2b((Path(cache_dir) / MANIFEST_FILENAME).read_bytes(), digest_size=16).hexdigest()


def checked_stamps(cache_dir: Path) -> Stamps | None:
    """The stamps recorded by the last planning run that changed nothing, if it checked this manifest."""
    try:
        checked = json.loads((Path(cache_dir) / CHECKED_FILENAME).read_text())
        if checked.get("manifest") == _manifest_digest(cache_dir):
            return checked["inputs"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def record_checked_stamps(cache_dir: Path, stamps: Stamps) -> None:
    """A planning run found nothing to change: the index files with `stamps` give this cache (atomic)."""
    payload = {"manifest": _manifest_digest(cache_dir), "inputs": stamps}
    atomic_write_text(Path(cache_dir) / CHECKED_FILENAME, json.dumps(payload, sort_keys=True))


def unchanged_state(cache_dir: Path, stamps: Stamps) -> CacheState | None:
    """The tables of `cache_dir` when it is complete and current for index files with `stamps` (module
    doc); None when `shard` must plan (no complete layout-2 cache, other stamps, a bad shard)."""
    state = read_state(cache_dir)
    if state is None:
        return None
    if stamps != state.info.get("inputs") and stamps != checked_stamps(cache_dir):
        return None
    if routes_with_bad_shards(state, cache_dir):
        return None
    return state
