"""LEAD's radar NPZ files → {radar1..radar4: (n, 4) array}, bit for bit as `np.load` gives them.

`read_npz_arrays` parses numpy's own zip layout directly (central directory, CRC-checked members, plain
.npy headers) and returns None for anything it does not fully check; `read_radar_with_numpy` is the
`np.load` path, used then, which also words every error.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lead_stream.core.constants import NUM_RADAR_SENSORS
from lead_stream.core.errors import LeadFormatError

RADAR_KEYS = tuple(f"radar{i}" for i in range(1, NUM_RADAR_SENSORS + 1))


def read_radar_with_numpy(path: Path, payload: bytes) -> dict[str, np.ndarray]:
    """The radar arrays through `np.load` (any NPZ); the reference for `read_npz_arrays`."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            missing = [k for k in RADAR_KEYS if k not in npz.files]
            if missing:
                raise LeadFormatError(path, f"missing arrays {missing}; found {sorted(npz.files)}")
            return {k: npz[k] for k in RADAR_KEYS}
    except LeadFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise LeadFormatError(path, f"corrupt NPZ ({type(exc).__name__}: {exc})") from None


# numpy's own .npy header for a plain little/big-endian bool/int/float array ("{'descr': '<f2', ...}")
_NPY_HEADER = re.compile(
    r"\{'descr': '([<>|][biuf][1248])', 'fortran_order': (True|False), "
    r"'shape': \((|\d+,|\d+(?:, \d+)+)\), \} *\n"
)
_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER_SIZE = 10000  # np.load refuses longer headers (max_header_size)


def read_npz_arrays(payload: bytes, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """`{key: np.load(payload)[key]}` for NPZ files as numpy (or `zipfile`) writes them, without `zipfile`
    and `np.load`'s per-array header `literal_eval`; None = not handled here (odd layout, missing key, any
    read problem), and the caller uses `np.load`, which also produces the error for a broken file.

    Handled: one-disk zip, no comments / zip64 directory / encryption / data descriptors, members stored or
    deflated, each `<key>.npy` checked against its CRC and size, with a plain .npy header.

    Returns:
        {key: array} equal to `np.load`'s (dtype, shape, memory order, values; writable copies).
    """
    try:
        members = _zip_members(payload)
        if members is None:
            return None
        arrays = {}
        for key in keys:
            if key in members or f"{key}.npy" not in members:  # np.load would look up `key` itself first
                return None
            data = _zip_member_bytes(payload, *members[f"{key}.npy"])
            array = None if data is None else _npy_array(data)
            if array is None:
                return None
            arrays[key] = array
    except (ValueError, IndexError, struct.error, zlib.error):  # UnicodeDecodeError is a ValueError
        return None
    return arrays


_ZIP_EOCD = struct.Struct("<4s4H2IH")  # end of central directory record (22 bytes)
_ZIP_CENTRAL = struct.Struct("<4s6H3I5H2I")  # central directory file header (46 bytes)
_ZIP_LOCAL = struct.Struct("<4s5H3I2H")  # local file header (30 bytes)
_ZIP_UTF8_FLAG = 0x800


def _zip_members(payload: bytes) -> dict[str, tuple[str, int, int, int, int, int]] | None:
    """{name: (name, method, crc, compressed size, size, local header offset)} from the central directory
    of a plain zip (see `read_npz_arrays`); None for anything else."""
    eocd_at = len(payload) - _ZIP_EOCD.size
    if eocd_at < 0 or payload[eocd_at - 20 : eocd_at - 16] == b"PK\x06\x07":  # zip64 locator
        return None
    magic, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, comment = _ZIP_EOCD.unpack_from(
        payload, eocd_at
    )
    if (
        magic != b"PK\x05\x06"
        or disk
        or cd_disk
        or disk_entries != entries
        or comment
        or cd_offset + cd_size != eocd_at
    ):
        return None
    members: dict[str, tuple[str, int, int, int, int, int]] = {}
    pos = cd_offset
    for _ in range(entries):
        (
            magic,
            _,
            _,
            flags,
            method,
            _,
            _,
            crc,
            compressed,
            size,
            name_len,
            extra_len,
            comment_len,
            _,
            _,
            _,
            offset,
        ) = _ZIP_CENTRAL.unpack_from(payload, pos)
        if (
            magic != b"PK\x01\x02"
            or flags & ~_ZIP_UTF8_FLAG
            or method not in (0, 8)
            or extra_len
            or comment_len
        ):
            return None
        raw_name = payload[pos + _ZIP_CENTRAL.size : pos + _ZIP_CENTRAL.size + name_len]
        name = raw_name.decode("utf-8" if flags & _ZIP_UTF8_FLAG else "cp437")
        if name in members:
            return None
        members[name] = (name, method, crc, compressed, size, offset)
        pos += _ZIP_CENTRAL.size + name_len
    return members if pos == eocd_at else None


def _zip_member_bytes(
    payload: bytes, name: str, method: int, crc: int, compressed: int, size: int, offset: int
) -> bytes | None:
    """The uncompressed bytes of one member, checked as `zipfile` checks them (local header magic and
    name, CRC-32) plus its size; None on any mismatch."""
    magic, _, flags, _, _, _, _, _, _, name_len, extra_len = _ZIP_LOCAL.unpack_from(payload, offset)
    start = offset + _ZIP_LOCAL.size
    local_name = payload[start : start + name_len].decode("utf-8" if flags & _ZIP_UTF8_FLAG else "cp437")
    if magic != b"PK\x03\x04" or flags & ~_ZIP_UTF8_FLAG or local_name != name:
        return None
    start += name_len + extra_len
    raw = payload[start : start + compressed]
    if len(raw) != compressed:
        return None
    data = raw if method == 0 else zlib.decompress(raw, -15)
    return data if len(data) == size and zlib.crc32(data) == crc else None


def _npy_array(data: bytes) -> np.ndarray | None:
    """One .npy member with a plain header → a writable array laid out as `np.lib.format.read_array`'s."""
    if data[:6] != _NPY_MAGIC or data[6] not in (1, 2, 3) or data[7] != 0:
        return None
    header_len, start = (
        (struct.unpack_from("<H", data, 8)[0], 10)
        if data[6] == 1
        else (struct.unpack_from("<I", data, 8)[0], 12)
    )
    if header_len > _NPY_MAX_HEADER_SIZE:
        return None
    match = _NPY_HEADER.fullmatch(data[start : start + header_len].decode("latin1"))
    if match is None:
        return None
    dtype = np.dtype(match[1])
    shape = tuple(int(v) for v in match[3].split(",") if v.strip())
    count = math.prod(shape)
    offset = start + header_len
    if len(data) < offset + count * dtype.itemsize:
        return None
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
    if match[2] == "True":
        array.shape = shape[::-1]
        return array.transpose()
    array.shape = shape
    return array
