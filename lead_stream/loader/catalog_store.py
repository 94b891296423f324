"""A cache + one collection → its `Catalog`, built once and kept as memory-mapped `.npy` arrays.

`<cache_dir>/catalog/<collection>-<stamp>/` holds one `.npy` file per catalog array and `catalog.json`
(pipeline id, bucket names and rates, counts). The stamp hashes what the catalog is derived from
(manifest.json's bytes, the bucket table's size and mtime, the catalog version), so a rebuilt cache or
index gets a new directory. The first process to need it builds it under an exclusive `flock` on
`catalog/.lock` (written to a temporary directory, then renamed); every other rank and worker on the
node waits for the lock, then maps the same files read-only: the arrays live once in the page cache,
not once per process. A cache directory that cannot be written (read-only mount) gets an in-memory
catalog instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lead_stream.loader.catalog import ARRAY_FIELDS, Catalog

CATALOG_DIRNAME = "catalog"
CATALOG_VERSION = 1
KEEP_OLD = 2  # older catalog directories kept per collection (another run may still map them)


def catalog_stamp(manifest_file: Path, bucket_files: list[Path], collection: str) -> str:
    """16 hex chars naming the inputs of a catalog (manifest bytes, bucket tables' size + mtime)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"v{CATALOG_VERSION}:{collection}:".encode())
    digest.update(Path(manifest_file).read_bytes())
    for path in bucket_files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _map(folder: Path) -> Catalog:
    info = json.loads((folder / "catalog.json").read_text())
    arrays = {name: _load(folder / f"{name}.npy") for name in ARRAY_FIELDS}
    return Catalog(
        pipeline_id=info["pipeline_id"],
        bucket_names=tuple(info["bucket_names"]),
        bucket_rates=tuple(info["bucket_rates"]),
        num_missing=info["num_missing"],
        collection_size=info["collection_size"],
        **arrays,
    )


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # an empty array cannot be mapped
        return np.load(path)


def _save(catalog: Catalog, folder: Path) -> None:
    tmp = folder.with_name(
        f".{folder.name}.building-{os.getpid()}"
    )  # not *.tmp: remove_stale_tmp unlinks files
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in ARRAY_FIELDS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(catalog, name)))
        info = {
            "catalog_version": CATALOG_VERSION,
            "pipeline_id": catalog.pipeline_id,
            "bucket_names": list(catalog.bucket_names),
            "bucket_rates": list(catalog.bucket_rates),
            "num_missing": catalog.num_missing,
            "collection_size": catalog.collection_size,
        }
        (tmp / "catalog.json").write_text(json.dumps(info, indent=1))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(root: Path, collection: str, keep: Path) -> None:
    old = sorted(
        (p for p in root.glob(f"{collection}-*") if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime_ns,
    )
    for folder in old[: max(len(old) - KEEP_OLD, 0)]:
        shutil.rmtree(folder, ignore_errors=True)  # a process mapping it keeps its pages (unlinked inodes)


def load_catalog(cache_dir: Path, stamp: str, collection: str, build: Callable[[], Catalog]) -> Catalog:
    """The catalog of (`cache_dir`, `collection`) with inputs `stamp`: mapped from disk, built if absent.

    Args:
        cache_dir: the cache directory (the catalog goes below it).
        stamp: `catalog_stamp` of the inputs.
        collection: the bucket collection.
        build: builds the catalog from the tables (called by one process only).

    Returns:
        The catalog with memory-mapped arrays (or in-memory arrays if `cache_dir` is not writable).
    """
    root = Path(cache_dir) / CATALOG_DIRNAME
    folder = root / f"{collection}-{stamp}"
    if (folder / "catalog.json").is_file():
        return _map(folder)
    try:
        root.mkdir(exist_ok=True)
        lock = _locked(root)
        lock.__enter__()
    except OSError:
        return build()  # read-only cache: every process builds its own
    try:
        if not (folder / "catalog.json").is_file():
            catalog = build()
            try:
                _save(catalog, folder)
            except OSError:
                return catalog
            _prune(root, collection, folder)
        return _map(folder)
    finally:
        lock.__exit__(None, None, None)
