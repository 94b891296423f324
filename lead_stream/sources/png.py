"""LEAD's 8-bit grey PNGs (semantics, hdmap, depth) → (H, W) uint8 through Pillow's own decoder, without
the `PngImageFile` chunk machinery; anything else is left to `Image.open` (None)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK = struct.Struct(">I4s")
_PNG_GREY8 = (8, 0, 0, 0, 0)  # IHDR bit depth, colour type, compression, filter, interlace


def decode_grey_png(payload: bytes) -> np.ndarray | None:
    """An 8-bit greyscale PNG → (H, W) uint8 through Pillow's own PNG ("zip") decoder, without the
    `PngImageFile` chunk machinery; None = not handled here, and the caller opens it with `Image.open`.

    Handled: non-interlaced 8-bit grey with only IHDR, IDAT and IEND chunks, every CRC valid, within
    Pillow's decompression-bomb limit: LEAD's semantics, hdmap and 8-bit depth PNGs. The pixels equal
    `np.array(Image.open(...))`'s: same decoder, same raw mode.
    """
    from PIL import Image

    if not payload.startswith(_PNG_SIGNATURE):
        return None
    header, idat, pos = None, [], len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(payload):
            return None
        length, kind = _PNG_CHUNK.unpack_from(payload, pos)
        end = pos + 8 + length
        if end + 4 > len(payload):
            return None
        data = payload[pos + 8 : end]
        if zlib.crc32(data, zlib.crc32(kind)) != int.from_bytes(payload[end : end + 4], "big"):
            return None
        pos = end + 4
        if header is None:
            if kind != b"IHDR" or length != 13:
                return None
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat.append(data)
        elif kind == b"IEND":
            break
        else:
            return None
    width, height = header[:2]
    limit = Image.MAX_IMAGE_PIXELS  # above it Image.open warns or refuses: leave those to it
    if (
        header[2:] != _PNG_GREY8
        or not idat
        or not 0 < width < 2**31
        or not 0 < height < 2**31
        or (limit is not None and width * height > limit)
    ):
        return None
    try:
        image = Image.frombytes("L", (width, height), b"".join(idat), "zip", "L")
    except Exception:
        return None
    return pixels(image)


def pixels(image: Any) -> np.ndarray:
    """`np.array(image)` of a loaded Pillow image, without the `tobytes` round trip for 8-bit grey ones.

    An "L" image (all LEAD semantics / hdmap / 8-bit depth PNGs) is exported through Pillow's Arrow
    interface (Pillow >= 11.2) as a zero-copy uint8 view and copied once: (H, W) uint8, equal to
    `np.array(image)` and writable. Other modes, older Pillow or an export error use `np.array(image)`.
    """
    if image.mode == "L" and hasattr(image, "__arrow_c_array__"):
        import pyarrow as pa

        try:
            flat = pa.array(image)
        except (ValueError, TypeError, pa.ArrowException):
            return np.array(image)
        if flat.type == pa.uint8() and len(flat) == image.width * image.height and flat.null_count == 0:
            return flat.to_numpy(zero_copy_only=True).reshape(image.height, image.width).copy()
    return np.array(image)
