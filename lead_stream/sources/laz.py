"""LEAD's LiDAR files (`lidar/NNNN.laz`) → (N, 4) float64 [x, y, z, time], bit for bit as laspy reads them
(LEAD rasterises laspy's float64 coordinates, so a float32 copy would move points across bin edges).

`decode_laz` decodes LEAD's own layout (LAS <= 1.3, LAZ with a chunk table, an unscaled extra dimension
`time`) with one lazrs call; anything else returns None and `read_laz_with_laspy` reads the file (and
words the error for a broken one).
"""

from __future__ import annotations

import functools
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np

from lead_stream.core.errors import LeadFormatError


def read_laz_with_laspy(path: Path, payload: bytes) -> np.ndarray:
    """`Route.lidar` through `laspy.read` (any LAS / LAZ layout); the reference for `decode_laz`."""
    import laspy

    try:
        las = laspy.read(io.BytesIO(payload))
        xyz = np.asarray(las.xyz, dtype=np.float64)
        names = set(las.point_format.dimension_names)
        if "time" not in names:
            problem = f"LAZ has no extra dimension 'time' (dimensions: {sorted(names)})"
            raise LeadFormatError(path, problem)
        time = np.asarray(las["time"], dtype=np.float64)
    except LeadFormatError:
        raise
    except Exception as exc:
        raise LeadFormatError(path, f"corrupt LAZ ({type(exc).__name__}: {exc})") from None
    return np.concatenate([xyz, time[:, None]], axis=1)


# LAS <= 1.3 point format id → standard record size in bytes; X, Y, Z are int32 at offsets 0, 4, 8.
_LAS_POINT_SIZES = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63}
# extra-bytes data types 1..10 (LAS 1.4 R15 table 24) → numpy dtype
_EXTRA_BYTES_DTYPES = {
    1: "u1",
    2: "i1",
    3: "<u2",
    4: "<i2",
    5: "<u4",
    6: "<i4",
    7: "<u8",
    8: "<i8",
    9: "<f4",
    10: "<f8",
}
_EXTRA_BYTES_SIZE = 192
_EXTRA_BYTES_SCALE_OR_OFFSET = 0b0001_1000
_LASZIP_VLR = (b"laszip encoded", 22204)
_EXTRA_BYTES_VLR = (b"LASF_Spec", 4)
_VLR_HEADER_SIZE = 54
_LAZ_VARIABLE_CHUNK_SIZE = 0xFFFFFFFF
_LAS_HEADER_SIZES = {0: 227, 1: 227, 2: 227, 3: 235}  # LAS 1.minor → smallest header laspy accepts


@functools.cache
def _standard_dimension_names(point_format: int) -> tuple[str, ...]:
    import laspy

    return tuple(laspy.PointFormat(point_format).standard_dimension_names)


def _las_vlrs(
    payload: bytes, header_size: int, num_vlrs: int, point_offset: int
) -> dict[tuple[bytes, int], list[bytes]]:
    """{(user id, record id): [record data, ...]} of the VLRs between a LAS header and the point data.

    Raises:
        ValueError: the VLRs run past the start of the point data.
    """
    vlrs: dict[tuple[bytes, int], list[bytes]] = {}
    pos = header_size
    for _ in range(num_vlrs):
        user_id = payload[pos + 2 : pos + 18].split(b"\0", 1)[0]
        record_id, length = struct.unpack_from("<HH", payload, pos + 18)
        start = pos + _VLR_HEADER_SIZE
        if start + length > point_offset:
            raise ValueError("VLRs run past the point data")
        vlrs.setdefault((user_id, record_id), []).append(payload[start : start + length])
        pos = start + length
    return vlrs


def _time_field(extra_bytes: bytes, point_format: int) -> tuple[int, str, int] | None:
    """(byte offset, numpy dtype, record size) of an unscaled extra dimension `time` described by an
    extra-bytes VLR of plain numeric dimensions with distinct, non-standard names; None otherwise."""
    if len(extra_bytes) % _EXTRA_BYTES_SIZE:
        return None
    names = set(_standard_dimension_names(point_format))
    offset, found = _LAS_POINT_SIZES[point_format], None
    for start in range(0, len(extra_bytes), _EXTRA_BYTES_SIZE):
        data_type, options = extra_bytes[start + 2], extra_bytes[start + 3]
        dtype = _EXTRA_BYTES_DTYPES.get(data_type)
        name = extra_bytes[start + 4 : start + 36].split(b"\0", 1)[0].decode()
        if dtype is None or name in names:
            return None
        names.add(name)
        if name == "time":
            if options & _EXTRA_BYTES_SCALE_OR_OFFSET:
                return None
            found = (offset, dtype)
        offset += np.dtype(dtype).itemsize
    return None if found is None else (found[0], found[1], offset)


def _chunk_table_matches(
    payload: bytes, point_offset: int, chunk_table: int, vlr: Any, num_points: int
) -> bool:
    """Whether the LAZ chunk table accounts for exactly the compressed bytes and the points.

    laspy's (parallel) reader splits the points by this table, while the one-call sequential decoder does
    not need it; checking it keeps every file laspy refuses on the laspy path (and its error message).

    Args:
        vlr: the file's `lazrs.LazVlr`.
    """
    import lazrs

    source = io.BytesIO(payload)
    source.seek(point_offset)
    entries = lazrs.read_chunk_table(source, vlr)
    if sum(byte_count for _, byte_count in entries) != chunk_table - point_offset - 8:
        return False
    chunk_size = vlr.chunk_size()
    if chunk_size == _LAZ_VARIABLE_CHUNK_SIZE:
        return sum(count for count, _ in entries) == num_points
    return len(entries) == -(-num_points // chunk_size) if chunk_size else False


def decode_laz(payload: bytes) -> np.ndarray | None:
    """LEAD's LiDAR file → (N, 4) float64 [x, y, z, time] without laspy's reader; None = not handled here.

    Handles LAZ (LAS 1.0-1.3, point formats 0-5) with a chunk table and an unscaled extra dimension `time`
    described by an extra-bytes VLR, whose record size is exactly the standard size plus the described extra
    dimensions: LEAD's layout. It decompresses with lazrs in one call (single thread) and applies laspy's own
    arithmetic (x = X * scale + offset in float64), so the result equals `laspy.read`'s `xyz` bit for bit. Anything else, or any decoding problem, returns None and the caller uses laspy (which also produces
    the error message for a broken file).
    """
    import lazrs

    try:
        minor = payload[25]
        if payload[:4] != b"LASF" or payload[24] != 1 or minor not in _LAS_HEADER_SIZES:
            return None
        (header_size,) = struct.unpack_from("<H", payload, 94)
        point_offset, num_vlrs = struct.unpack_from("<II", payload, 96)
        format_byte, record_size, num_points = struct.unpack_from("<BHI", payload, 104)
        scales = np.array(struct.unpack_from("<3d", payload, 131), dtype=np.float64)
        offsets = np.array(struct.unpack_from("<3d", payload, 155), dtype=np.float64)
        point_format = format_byte & 0x3F
        if (
            format_byte & 0xC0 != 0x80
            or point_format not in _LAS_POINT_SIZES
            or header_size < _LAS_HEADER_SIZES[minor]
        ):
            return None
        vlrs = _las_vlrs(payload, header_size, num_vlrs, point_offset)
        laszip, extra = vlrs.get(_LASZIP_VLR, []), vlrs.get(_EXTRA_BYTES_VLR, [])
        if len(laszip) != 1 or len(extra) != 1:
            return None
        vlr = lazrs.LazVlr(laszip[0])
        if vlr.item_size() != record_size:
            return None
        time_field = _time_field(extra[0], point_format)
        if time_field is None or time_field[2] != record_size:
            return None
        (chunk_table,) = struct.unpack_from("<q", payload, point_offset)
        if not point_offset + 8 <= chunk_table <= len(payload) - 8:
            return None
        if not _chunk_table_matches(payload, point_offset, chunk_table, vlr, num_points):
            return None
        compressed = bytearray(payload[point_offset:])
        struct.pack_into("<q", compressed, 0, chunk_table - point_offset)  # lazrs wants it buffer-relative
        raw = bytearray(num_points * record_size)
        lazrs.decompress_points(compressed, laszip[0], raw, False)
    except (ValueError, IndexError, struct.error, MemoryError, lazrs.LazrsError):  # incl. UnicodeDecodeError
        return None
    except BaseException as exc:  # a Rust panic inside lazrs (pyo3's PanicException is a BaseException)
        if type(exc).__name__ != "PanicException":
            raise
        return None
    time_offset, time_dtype, _ = time_field
    records = np.frombuffer(
        raw,
        dtype=np.dtype(
            {
                "names": ["X", "Y", "Z", "time"],
                "formats": ["<i4", "<i4", "<i4", time_dtype],
                "offsets": [0, 4, 8, time_offset],
                "itemsize": record_size,
            }
        ),
    )
    points = np.empty((num_points, 4), dtype=np.float64)
    for column, name in enumerate(("X", "Y", "Z")):
        points[:, column] = records[name] * scales[column] + offsets[column]  # laspy's ScaledArrayView
    points[:, 3] = records["time"]
    return points
