"""Cache root → the caches in it: which are complete, how big, how old, built by which code, and which one a
run picks; removing one.

A cache root is `<data_root>/cache` or any folder given as `cache_dir` (`ShardConfig.cache_root`); it holds
one `<pipeline_id>/` folder per cache. A run reads the newest complete cache (by its manifest.json) unless
told otherwise. A cache is *stale* when the current code would not build it for its collections (another
`PREPROCESS_VERSION`, preprocessing source or pipeline-id rule); only its own folder is ever removed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from lead_stream.cache.identity import pipeline_id
from lead_stream.cache.manifest import CACHE_DIRNAME, MANIFEST_FILENAME, TABLE_FILENAMES
from lead_stream.core.errors import LeadFormatError


@dataclass(frozen=True)
class CacheInfo:
    """One `<pipeline_id>/` folder of a cache root."""

    cache_dir: Path
    pipeline_id: str
    complete: bool  # manifest.json present
    num_samples: int | None  # from the manifest (None: incomplete)
    num_shards: int | None
    collections: tuple[str, ...]  # the bucket collections it holds (empty: incomplete)
    size_bytes: int  # every file of the folder, on disk
    modified_ns: int  # manifest.json's mtime, else the newest file's
    current: bool  # the current code builds this pipeline id for the cache's collections

    def one_line(self) -> str:
        import datetime

        when = datetime.datetime.fromtimestamp(self.modified_ns / 1e9).strftime("%Y-%m-%d %H:%M")
        state = "complete" if self.complete else "incomplete"
        what = (
            f"{self.num_samples:,} samples in {self.num_shards:,} shards, {'+'.join(self.collections)}"
            if self.complete
            else "unfinished build"
        )
        code = "current code" if self.current else "stale: not what the current code builds"
        return f"{self.pipeline_id}  {state:10}  {self.size_bytes / 1e6:9.1f} MB  {when}  {what}; {code}"


def cache_root_of(root: Path) -> Path:
    """`root` if it holds `<pipeline_id>/` caches (a cache root), else `<root>/cache` (a data root)."""
    root = Path(root)
    if (root / CACHE_DIRNAME).is_dir() or not root.is_dir():
        return root / CACHE_DIRNAME
    if any(root.glob(f"*/{MANIFEST_FILENAME}")) or any(root.glob("*/journal")):
        return root
    return root / CACHE_DIRNAME


def _current_id(collections: tuple[str, ...]) -> str | None:
    from lead_stream.cache.shard import ShardConfig

    return pipeline_id(ShardConfig(collections=collections)) if collections else None


def _info(cache_dir: Path) -> CacheInfo:
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    manifest_path = cache_dir / MANIFEST_FILENAME
    if manifest_path.is_file():
        try:
            info = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise LeadFormatError(manifest_path, f"not JSON ({error})") from None
        collections = tuple(info.get("config", {}).get("collections", ()))
        return CacheInfo(
            cache_dir=cache_dir,
            pipeline_id=cache_dir.name,
            complete=True,
            num_samples=int(info.get("num_samples", 0)),
            num_shards=int(info.get("num_shards", 0)),
            collections=collections,
            size_bytes=size,
            modified_ns=manifest_path.stat().st_mtime_ns,
            current=_current_id(collections) == cache_dir.name,
        )
    return CacheInfo(
        cache_dir=cache_dir,
        pipeline_id=cache_dir.name,
        complete=False,
        num_samples=None,
        num_shards=None,
        collections=(),
        size_bytes=size,
        modified_ns=max((p.stat().st_mtime_ns for p in files), default=cache_dir.stat().st_mtime_ns),
        current=False,
    )


def list_caches(root: Path) -> list[CacheInfo]:
    """Every cache folder under the cache root of `root` (a data root or a cache root), oldest first."""
    cache_root = cache_root_of(root)
    if not cache_root.is_dir():
        return []
    infos = [_info(d) for d in sorted(cache_root.iterdir()) if d.is_dir()]
    return sorted(infos, key=lambda info: (info.modified_ns, info.pipeline_id))


def newest_complete(caches: list[CacheInfo]) -> CacheInfo | None:
    """The cache a run reads by default: the complete one whose manifest.json was written last."""
    complete = [c for c in caches if c.complete]
    return complete[-1] if complete else None


def find_cache(root: Path, pipeline_id: str | None = None) -> Path:
    """A complete cache: `root` itself if it is one, else `pipeline_id` or the newest under its cache root.

    Raises:
        LeadFormatError: no such complete cache.
    """
    root = Path(root)
    if pipeline_id is None and (root / MANIFEST_FILENAME).is_file():
        return root
    caches = list_caches(root)
    if pipeline_id is not None:
        match = [c for c in caches if c.pipeline_id == pipeline_id and c.complete]
        if not match:
            raise LeadFormatError(
                cache_root_of(root) / pipeline_id,
                f"no complete cache {pipeline_id!r} (have: {', '.join(c.pipeline_id for c in caches) or 'none'})",
            )
        return match[0].cache_dir
    newest = newest_complete(caches)
    if newest is None:
        raise LeadFormatError(
            cache_root_of(root), f"no complete cache (no */{MANIFEST_FILENAME}; run lead-stream shard)"
        )
    return newest.cache_dir


def remove_cache(root: Path, pipeline_id: str) -> CacheInfo:
    """Delete the cache folder `pipeline_id` under the cache root of `root`; returns what it was.

    Raises:
        LeadFormatError: there is no such cache folder.
    """
    caches = {c.pipeline_id: c for c in list_caches(root)}
    if pipeline_id not in caches:
        raise LeadFormatError(
            cache_root_of(root) / pipeline_id, f"no such cache (have: {', '.join(caches) or 'none'})"
        )
    info = caches[pipeline_id]
    (info.cache_dir / MANIFEST_FILENAME).unlink(
        missing_ok=True
    )  # first: never a half-deleted "complete" cache
    shutil.rmtree(info.cache_dir)
    return info


def cache_tables(cache_dir: Path) -> dict[str, pl.LazyFrame]:
    """Lazy scans of a complete cache's tables by name: `samples`, `shards`, `failures`."""
    return {name: pl.scan_parquet(Path(cache_dir) / filename) for name, filename in TABLE_FILENAMES.items()}
