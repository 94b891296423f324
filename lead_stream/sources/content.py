"""A route's content hash: what `lead-stream index --verify-content` compares, which no stat can fool.

The fingerprint (`RouteStore.fingerprint`: name, size and mtime_ns of every file) misses a file rewritten in
place with its size kept and its mtime restored (`os.utime(..., ns=...)`, `rsync --times`, `cp -p`). The
content hash reads the bytes:

- an extracted route (`FolderStore`): blake2b over, for results.json and every file of every modality folder
  in sorted order, the route-relative name, the size and every byte (every file the index or the shard
  builder reads; `*.tmp` files of unfinished writers included, as in the fingerprint). Cost: reading the route.
- a zipped route (`ZipStore`): blake2b over the route-relative name, size and CRC-32 of each member as the
  central directory records them. The CRC is the zip's own content checksum (verified again when a member is
  read), so this costs no member read; it is the zip's content identity, not a hash of the bytes.
"""

from __future__ import annotations

import hashlib
import os

from lead_stream.core import layout
from lead_stream.sources.stores import FolderStore, RouteStore, ZipStore

HASH_BYTES = 16  # blake2b digest size: 32 hex characters
READ_CHUNK = 1 << 20  # bytes read per call while hashing a file
_MODALITY_DIRS = layout.all_modality_dirnames()


def content_hash(store: RouteStore, route_id: str) -> str:
    """The content hash of one route's files (see module doc), as hex.

    Args:
        store: the copy the index reads (`open_store(data_root, source)`).
        route_id: `"<Scenario>/<route_dir>"` (part of the hash, as in the fingerprint).

    Raises:
        OSError: a file vanished or became unreadable while it was hashed.
    """
    digest = hashlib.blake2b(route_id.encode(), digest_size=HASH_BYTES)
    if isinstance(store, ZipStore):
        members = store.archive.members
        for rel in sorted(store.files):
            member = members[store.files[rel]]
            digest.update(f"{rel}:{member.size}:{member.crc:08x}\n".encode())
        return digest.hexdigest()
    if not isinstance(store, FolderStore):
        raise TypeError(f"no content hash for a {type(store).__name__}")
    for rel in _folder_files(store):
        path = store.path_of(rel)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(f"{rel}:{size}\n".encode())
            while chunk := handle.read(READ_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _folder_files(store: FolderStore) -> list[str]:
    """Route-relative names of results.json and of every file in every modality folder, sorted."""
    names = [layout.RESULTS_FILENAME] if store.is_file(layout.RESULTS_FILENAME) else []
    for folder in _MODALITY_DIRS:
        names.extend(f"{folder}/{name}" for name in sorted(store.names(folder)))
    return names
