"""Shard location + manifest byte range → the raw members of one sample (a view of a mapped shard).

Local shards are opened through a small LRU of open files (one handle per shard per worker) and
memory-mapped, so a sample is a zero-copy view of the page cache (`read_view` / `read_stable`).
Remote shards (`pipe:...`, `http(s)://...`, any fsspec URL) go through webdataset's `gopen` and are
downloaded whole, atomically, into a local shard cache directory on first use, then read by seek;
without a cache directory, seekable fsspec URLs are read in place when fsspec is installed.
"""

from __future__ import annotations

import io
import mmap
import os
import re
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lead_stream.core.atomic import atomic_path
from lead_stream.core.errors import LeadFormatError

TAR_BLOCK = 512
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def is_url(location: str) -> bool:
    """True for `pipe:...`, `http://...`, `s3://...`; False for plain (absolute or relative) paths."""
    return bool(_URL.match(location)) and not re.match(r"^[a-zA-Z]:[\\/]", location)


def split_members(
    blob: bytes | memoryview, *, shard: str, key: str, check_sums: bool = True
) -> dict[str, memoryview]:
    """Parse the USTAR members of one sample's byte range into {member name: payload view} (no copies).

    Args:
        blob: bytes from the sample's first header through the padding of its last member (any buffer).
        shard: shard location, for error messages.
        key: expected sample key; every member must be named "<key>.<member>".
        check_sums: verify every header's checksum (one numpy operation for all headers). The loader's hot
            path skips it: the structure checks below already catch a header that names another key, a size
            that overruns the range or members that do not tile it exactly, payload corruption surfaces as a
            decode error, and `lead-stream verify` re-hashes whole shards.

    Raises:
        LeadFormatError: a header is corrupt, a member belongs to another key, or a member repeats.
    """
    view = memoryview(blob).cast("B")
    prefix = key.encode() + b"."
    skip = len(prefix)
    members: dict[str, memoryview] = {}
    headers: list[int] = []
    stored_sums: list[bytes] = []
    pos, end = 0, len(view)
    while pos + TAR_BLOCK <= end and view[pos] != 0:
        header = bytes(view[pos : pos + 157])  # name, mode, ids, size, mtime, checksum (prefix read below)
        name = header[:100].split(b"\0", 1)[0]
        if view[pos + 345] != 0:
            name = bytes(view[pos + 345 : pos + 500]).split(b"\0", 1)[0] + b"/" + name
        try:
            size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        except ValueError:
            raise LeadFormatError(shard, f"sample {key!r}: corrupt tar header at +{pos}") from None
        if not name.startswith(prefix):
            raise LeadFormatError(
                shard, f"sample {key!r}: member {name.decode(errors='replace')!r} belongs to another key"
            )
        member = name[skip:].decode()
        if member in members:
            raise LeadFormatError(shard, f"sample {key!r} has duplicate member {member!r}")
        start = pos + TAR_BLOCK
        if start + size > end:
            raise LeadFormatError(shard, f"sample {key!r}: member {member!r} is truncated")
        members[member] = view[start : start + size]
        headers.append(pos)
        stored_sums.append(header[148:156])
        pos = start + -(-size // TAR_BLOCK) * TAR_BLOCK
    if not headers:
        raise LeadFormatError(shard, f"sample {key!r}: no tar member in its byte range")
    if pos != end:
        raise LeadFormatError(shard, f"sample {key!r}: members end at +{pos}, its byte range at +{end}")
    if check_sums:
        _check_header_sums(view, headers, stored_sums, shard=shard, key=key)
    return members


def _check_header_sums(
    view: memoryview, headers: list[int], stored_sums: list[bytes], *, shard: str, key: str
) -> None:
    usable = len(view) // TAR_BLOCK * TAR_BLOCK
    blocks = np.frombuffer(view, np.uint8, count=usable).reshape(-1, TAR_BLOCK)[
        np.asarray(headers) // TAR_BLOCK
    ]
    computed = blocks.sum(axis=1, dtype=np.int64) - blocks[:, 148:156].sum(axis=1, dtype=np.int64) + 8 * 32
    for pos, value, field in zip(headers, computed.tolist(), stored_sums, strict=True):
        stored = field.rstrip(b"\0 ")
        try:
            valid = bool(stored) and int(stored, 8) == value
        except ValueError:
            valid = False
        if not valid:
            raise LeadFormatError(shard, f"sample {key!r}: tar header checksum mismatch at +{pos}")


class ShardFiles:
    """Reads byte ranges of shards; keeps up to `max_open` files open (LRU).

    Args:
        locations: per shard index, a local path or a URL.
        local_cache_dir: where remote shards are downloaded (whole, atomically); None → fsspec in place
            for seekable URLs, or a per-user temp directory for `pipe:` and other streams.
        max_open: open file handles kept per process.
        use_mmap: map local shard files for `read_view` (zero-copy); False reads into a reused buffer.
    """

    def __init__(
        self,
        locations: list[str],
        *,
        local_cache_dir: str | None = None,
        max_open: int = 4,
        use_mmap: bool = True,
    ) -> None:
        self.locations = locations
        self.local_cache_dir = local_cache_dir
        self.max_open = max(1, max_open)
        self._open: OrderedDict[int, BinaryIO] = OrderedDict()
        self.num_opens = 0
        self.num_downloads = 0
        self.use_mmap = use_mmap
        self._maps: dict[int, mmap.mmap] = {}
        self._buffer = bytearray()

    def read(self, shard_idx: int, offset: int, size: int) -> bytes:
        """`size` bytes of shard `shard_idx` from `offset`."""
        handle = self._handle(shard_idx)
        handle.seek(offset)
        payload = handle.read(size)
        if len(payload) != size:
            raise LeadFormatError(
                self.locations[shard_idx], f"short read: {len(payload)} of {size} bytes at offset {offset}"
            )
        return payload

    def read_view(self, shard_idx: int, offset: int, size: int) -> memoryview:
        """Like `read`, without a copy where possible: valid until the next `read_view` or `close`.

        A local shard is memory-mapped (shards are immutable: written once, renamed into place, so a mapping
        never sees a file change under it), and the view points into the page cache: no read call, and the
        pages of members the caller never touches (the other variant's JPEG) are never copied. Other
        sources read into a buffer this object reuses (no fresh allocation per sample).
        """
        handle = self._handle(shard_idx)
        if shard_idx in self._maps:
            return self._mapped_view(shard_idx, offset, size)
        if len(self._buffer) < size:
            self._buffer = bytearray(max(size, 2 * len(self._buffer)))
        view = memoryview(self._buffer)[:size]
        handle.seek(offset)
        got = handle.readinto(view)
        if got != size:
            raise LeadFormatError(
                self.locations[shard_idx], f"short read: {got} of {size} bytes at offset {offset}"
            )
        return view

    def read_stable(self, shard_idx: int, offset: int, size: int) -> memoryview | bytes:
        """Like `read_view`, but valid until `close` (or the shard leaves the LRU): a view into the mapping of a
        local shard, else a fresh copy. Lets a caller hold several samples at once without copying them."""
        self._handle(shard_idx)  # opens (and maps) the shard if it is not open yet
        if shard_idx in self._maps:
            return self._mapped_view(shard_idx, offset, size)
        return self.read(shard_idx, offset, size)

    def _mapped_view(self, shard_idx: int, offset: int, size: int) -> memoryview:
        mapped = self._maps[shard_idx]
        if offset < 0 or offset + size > len(mapped):
            raise LeadFormatError(
                self.locations[shard_idx],
                f"short read: {max(0, len(mapped) - offset)} of {size} bytes at offset {offset}",
            )
        return memoryview(mapped)[offset : offset + size]

    def close(self) -> None:
        """Close every open handle and mapping."""
        while self._open:
            self._evict(next(iter(self._open)))

    def _evict(self, shard_idx: int) -> None:
        self._open.pop(shard_idx).close()
        mapped = self._maps.pop(shard_idx, None)
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:  # a caller still holds a view: the mapping closes when that view goes
                pass

    def _handle(self, shard_idx: int) -> BinaryIO:
        handle = self._open.get(shard_idx)
        if handle is not None:
            self._open.move_to_end(shard_idx)
            return handle
        if len(self._open) >= self.max_open:
            self._evict(next(iter(self._open)))
        try:
            handle = self._open_location(self.locations[shard_idx])
        except FileNotFoundError:  # deleted after make_loader checked it
            raise LeadFormatError(
                self.locations[shard_idx], "shard is missing (deleted while loading?); rebuild the cache"
            ) from None
        self.num_opens += 1
        self._open[shard_idx] = handle
        if self.use_mmap and isinstance(handle, io.BufferedReader):
            try:
                self._maps[shard_idx] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # an empty file, or a file system without mmap: plain reads
                pass
        return handle

    def _open_location(self, location: str) -> BinaryIO:
        if not is_url(location):
            return open(location, "rb")
        if location.startswith("file:"):
            return open(location[len("file:") :].removeprefix("//"), "rb")
        if self.local_cache_dir is None and not location.startswith("pipe:"):
            try:  # seekable remote file (s3://, gs://, https:// with aiohttp, ...): range reads, no copy
                import fsspec

                return fsspec.open(location, "rb").open()
            except ImportError:  # fsspec or its protocol's backend is not installed: download instead
                pass
        return open(self._download(location), "rb")

    def _download(self, url: str) -> Path:
        cache_dir = Path(
            self.local_cache_dir or Path(tempfile.gettempdir()) / f"lead-stream-shards-{os.getuid()}"
        )
        local = cache_dir / _cache_name(url)
        if local.exists():
            return local
        from webdataset.gopen import gopen

        with atomic_path(local) as tmp, gopen(url, "rb") as stream, open(tmp, "wb") as out:
            shutil.copyfileobj(stream, out, length=1 << 22)
        self.num_downloads += 1
        return local


def _cache_name(url: str) -> str:
    """A file name for a URL's local copy: its basename, prefixed with a short hash of the whole URL."""
    import hashlib

    base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1].split()[-1])
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"
