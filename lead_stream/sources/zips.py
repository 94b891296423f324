"""A zip file (local or remote `ByteSource`) → its central directory and its members' bytes, read in place.

`ZipArchive(source)` reads the end-of-central-directory record and the central directory once (ZIP64 too)
and then reads any member with one ranged read of its local header and data: no extraction, no temp copy.
Stored, deflate, bzip2 and lzma members are decompressed and their CRC-32 checked; a truncated archive, a
bad CRC or a damaged member raises `LeadFormatError(<zip>/<member>, problem)`. For remote sources a member
read also fetches the following members of the same folder (up to `READ_AHEAD_BYTES`), so reading a
route's metas costs a few range requests and nothing outside the folders read.
"""

from __future__ import annotations

import bz2
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from lead_stream.core.errors import LeadFormatError
from lead_stream.sources.byte_sources import ByteSource, is_url

TAIL_BYTES = 1 << 16  # first read: the last 64 KiB (EOCD, ZIP64 locator, usually the whole directory)
READ_AHEAD_BYTES = 4 << 20  # remote member reads also fetch the next members of the folder, up to this
BLOCK_CACHE_BYTES = 64 << 20  # remote blocks kept per archive (LRU)
LOCAL_HEADER_SLACK = 64  # local extra fields are often longer than the central ones (Info-ZIP "UT")

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record (22 bytes)
_EOCD64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header (46 bytes)
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header (30 bytes)
_SIG_EOCD, _SIG_EOCD64_LOCATOR, _SIG_EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
_SIG_CENTRAL, _SIG_LOCAL = b"PK\x01\x02", b"PK\x03\x04"
_METHODS = {0: "stored", 8: "deflate", 12: "bzip2", 14: "lzma"}


@dataclass(frozen=True)
class ZipMember:
    """One central-directory entry."""

    name: str  # full member name ("data/.../metas/0000.pkl"; folders end with "/")
    offset: int  # local header offset in the file
    compressed_size: int
    size: int
    crc: int
    method: int
    flags: int


def member_path(location: str, name: str) -> Path | str:
    """How messages name a member: `<zip>/<member>` (a string for URLs, whose `//` a Path would fold)."""
    return f"{location}/{name}" if is_url(location) else Path(location) / name


class ZipArchive:
    """The central directory of one zip and ranged reads of its members (see module doc).

    Raises:
        LeadFormatError: not a zip, truncated, or an unsupported layout (multi-disk).
    """

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.location = source.location
        self.size = source.size()
        self.directory_bytes = b""  # the raw central directory (fingerprints hash it)
        self.members: dict[str, ZipMember] = {}
        self._shift = 0  # bytes prepended before the archive (self-extracting stubs)
        self._read_directory()
        self._order = sorted(self.members.values(), key=lambda m: m.offset)
        self._position = {m.name: i for i, m in enumerate(self._order)}
        self._blocks: OrderedDict[int, tuple[int, bytes]] = OrderedDict()  # start → (end, bytes)
        self._block_bytes = 0

    def _error(self, problem: str) -> LeadFormatError:
        return LeadFormatError(self.location, problem)

    def _read_directory(self) -> None:
        tail_start = max(0, self.size - TAIL_BYTES)
        tail = self.source.read_range(tail_start, self.size)
        at = tail.rfind(_SIG_EOCD)
        if at < 0 or len(tail) - at < _EOCD.size:
            raise self._error(
                f"not a zip or truncated: no end-of-central-directory record in the last "
                f"{len(tail):,} of {self.size:,} bytes"
            )
        _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
        eocd_pos = tail_start + at
        if disk or cd_disk:
            raise self._error("multi-disk (split) zips are not supported")
        cd_end = eocd_pos
        if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
            count, cd_size, cd_offset, cd_end = self._zip64(tail, tail_start, at)
        cd_start = cd_end - cd_size
        if cd_start < 0:
            raise self._error(f"truncated: central directory of {cd_size:,} bytes does not fit the file")
        self._shift = cd_start - cd_offset
        if cd_start >= tail_start:
            directory = tail[cd_start - tail_start : cd_end - tail_start]
        else:
            directory = self.source.read_range(cd_start, cd_end)
        if len(directory) != cd_size:
            raise self._error("truncated: central directory cut short")
        self.directory_bytes = directory
        self._parse_directory(directory, count)

    def _zip64(self, tail: bytes, tail_start: int, at: int) -> tuple[int, int, int, int]:
        loc = at - _EOCD64_LOCATOR.size
        if loc < 0 or tail[loc : loc + 4] != _SIG_EOCD64_LOCATOR:
            raise self._error("ZIP64 archive without its end-of-central-directory locator")
        _, _, eocd64_offset, _ = _EOCD64_LOCATOR.unpack_from(tail, loc)
        record_pos = tail_start + loc - _EOCD64.size  # the record sits right before its locator
        record = self.source.read_range(record_pos, record_pos + _EOCD64.size)
        if record[:4] != _SIG_EOCD64:
            record_pos = eocd64_offset
            record = self.source.read_range(record_pos, record_pos + _EOCD64.size)
        if len(record) < _EOCD64.size or record[:4] != _SIG_EOCD64:
            raise self._error("ZIP64 end-of-central-directory record missing")
        fields = _EOCD64.unpack(record)
        count, cd_size, cd_offset = fields[7], fields[8], fields[9]
        return count, cd_size, cd_offset, record_pos

    def _parse_directory(self, data: bytes, count: int) -> None:
        pos, end = 0, len(data)
        for _ in range(count):
            if pos + _CENTRAL.size > end or data[pos : pos + 4] != _SIG_CENTRAL:
                raise self._error(f"corrupt central directory at byte {pos}")
            (_, _, _, flags, method, _, _, crc, csize, usize, nlen, elen, clen, _, _, _, offset) = (
                _CENTRAL.unpack_from(data, pos)
            )
            raw_name = data[pos + 46 : pos + 46 + nlen]
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
            if 0xFFFFFFFF in (csize, usize, offset):
                usize, csize, offset = _zip64_sizes(
                    data[pos + 46 + nlen : pos + 46 + nlen + elen], usize, csize, offset
                )
            self.members[name] = ZipMember(name, offset + self._shift, csize, usize, crc, method, flags)
            pos += 46 + nlen + elen + clen

    # --- member reads -------------------------------------------------------------------------------
    def read(self, name: str) -> bytes:
        """The decompressed, CRC-checked bytes of member `name`.

        Raises:
            KeyError: no such member.
            LeadFormatError: truncated or corrupt member, bad CRC-32, unsupported compression.
        """
        member = self.members[name]
        path = member_path(self.location, name)
        if member.flags & 0x1:
            raise LeadFormatError(path, "encrypted zip member")
        if member.method not in _METHODS:
            raise LeadFormatError(path, f"unsupported zip compression method {member.method}")
        raw = self._raw(member)
        if len(raw) < _LOCAL.size or raw[:4] != _SIG_LOCAL:
            raise LeadFormatError(path, "corrupt zip: no local file header at the member's offset")
        nlen, elen = _LOCAL.unpack_from(raw)[9:11]
        start = _LOCAL.size + nlen + elen
        stop = start + member.compressed_size
        if stop > len(raw):
            raw += self.source.read_range(member.offset + len(raw), member.offset + stop)
        payload = raw[start:stop]
        if len(payload) != member.compressed_size:
            raise LeadFormatError(path, "truncated zip: member data runs past the end of the file")
        data = _decompress(payload, member, path)
        if len(data) != member.size:
            raise LeadFormatError(path, f"corrupt zip member: {len(data):,} bytes, expected {member.size:,}")
        found = zlib.crc32(data)
        if found != member.crc:
            raise LeadFormatError(
                path, f"bad CRC-32 {found:08x}, the central directory says {member.crc:08x}"
            )
        return data

    def _raw(self, member: ZipMember) -> bytes:
        """Local header + data (at least) of `member`: one read, or a slice of a read-ahead block."""
        want_end = member.offset + _LOCAL.size + len(member.name.encode()) + LOCAL_HEADER_SLACK
        want_end += member.compressed_size
        if not self.source.remote:
            return self.source.read_range(member.offset, min(want_end, self.size))
        for start, (end, block) in self._blocks.items():
            if start <= member.offset and want_end <= end:
                self._blocks.move_to_end(start)
                return block[member.offset - start : want_end - start]
        end = self._read_ahead_end(member, want_end)
        block = self.source.read_range(member.offset, end)
        self._blocks[member.offset] = (member.offset + len(block), block)
        self._block_bytes += len(block)
        while self._block_bytes > BLOCK_CACHE_BYTES and len(self._blocks) > 1:
            _, (_, old) = self._blocks.popitem(last=False)
            self._block_bytes -= len(old)
        return block[: want_end - member.offset]

    def _read_ahead_end(self, member: ZipMember, want_end: int) -> int:
        """End of a remote read starting at `member`: the following members of its folder, up to the budget."""
        folder = member.name.rsplit("/", 1)[0] if "/" in member.name else ""
        end = want_end
        for nxt in self._order[self._position[member.name] + 1 :]:
            nxt_folder = nxt.name.rsplit("/", 1)[0] if "/" in nxt.name else ""
            nxt_end = (
                nxt.offset + _LOCAL.size + len(nxt.name.encode()) + LOCAL_HEADER_SLACK + nxt.compressed_size
            )
            if nxt_folder != folder or nxt_end - member.offset > READ_AHEAD_BYTES:
                break
            end = max(end, nxt_end)
        return min(end, self.size)

    def close(self) -> None:
        self.source.close()
        self._blocks.clear()
        self._block_bytes = 0


def _zip64_sizes(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    """Replace the 0xFFFFFFFF fields of a central entry from its ZIP64 extra field (id 0x0001)."""
    pos = 0
    while pos + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, pos)
        if kind == 0x0001:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return usize, csize, offset


def _decompress(payload: bytes, member: ZipMember, path: Path | str) -> bytes:
    try:
        if member.method == 0:
            return payload
        if member.method == 8:
            return zlib.decompress(payload, -15)
        if member.method == 12:
            return bz2.decompress(payload)
        return zipfile.LZMADecompressor().decompress(payload)
    except (zlib.error, OSError, EOFError, ValueError, RuntimeError) as error:
        raise LeadFormatError(path, f"corrupt {_METHODS[member.method]} data in zip ({error})") from None
