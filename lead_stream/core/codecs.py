"""A small registry of pure encode/decode functions for sample members: `jpg`, `lz4`, `npy`.

`encode(kind, array) -> bytes`, `decode(kind, payload) -> np.ndarray`. lz4 payloads carry a header
so they decode without side information; `npy` is numpy's own format (`allow_pickle=False`), readable by
plain webdataset. Two lz4 payloads exist, told apart by their first 4 bytes (`decode("lz4", ...)` picks):

* `LSA1` one array: magic, dtype, shape, then one lz4 block (`encode_lz4` / `decode_lz4`);
* `LSC2` named groups of named arrays, each group one independently decodable block: the sample's
  `arrays.lz4` container (`container`).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

import lz4.block
import numpy as np
import simplejpeg

from lead_stream.core.container import ARRAYS_MAGIC, decode_arrays

LZ4_MAGIC = b"LSA1"
_HEADER = struct.Struct("<4sB B")  # magic, len(dtype str), ndim


def encode_lz4(array: np.ndarray) -> bytes:
    """lz4-compress a C-contiguous copy of `array` behind a dtype + shape header."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.str.encode("ascii")
    header = _HEADER.pack(LZ4_MAGIC, len(dtype), array.ndim) + dtype
    header += struct.pack(f"<{array.ndim}Q", *array.shape)
    return header + lz4.block.compress(array.tobytes(), store_size=True)


def decode_lz4(payload: bytes) -> np.ndarray:
    """Inverse of `encode_lz4`; raises ValueError on a payload without our header."""
    magic, dtype_len, ndim = _HEADER.unpack_from(payload, 0)
    if magic != LZ4_MAGIC:
        raise ValueError(f"not a lead-stream lz4 array (magic {magic!r}, expected {LZ4_MAGIC!r})")
    pos = _HEADER.size
    dtype = np.dtype(payload[pos : pos + dtype_len].decode("ascii"))
    pos += dtype_len
    shape = struct.unpack_from(f"<{ndim}Q", payload, pos)
    pos += 8 * ndim
    raw = lz4.block.decompress(payload[pos:])
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def decode_lz4_any(payload: bytes | memoryview) -> np.ndarray | dict[str, dict[str, np.ndarray]]:
    """The `lz4` codec: one array for an `LSA1` payload, group → {name → array} for an `LSC2` container."""
    if bytes(payload[:4]) == ARRAYS_MAGIC:
        return decode_arrays(payload)
    return decode_lz4(payload)


def encode_npy(array: np.ndarray) -> bytes:
    """numpy .npy bytes (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(payload: bytes) -> np.ndarray:
    """Inverse of `encode_npy`."""
    return np.load(io.BytesIO(payload), allow_pickle=False)


def encode_jpg(array: np.ndarray, *, quality: int = 90) -> bytes:
    """JPEG-encode an (H, W, 3) uint8 RGB image with simplejpeg."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(array), quality=quality, colorspace="RGB")


def decode_jpg(payload: bytes) -> np.ndarray:
    """Decode JPEG bytes to an (H, W, 3) uint8 RGB array."""
    return simplejpeg.decode_jpeg(payload, colorspace="RGB")


def jpeg_problem(payload: bytes, size_hw: tuple[int, int]) -> str | None:
    """What keeps `payload` from decoding as a full `size_hw` JPEG, or None when it decodes.

    Checks the SOI and EOI markers (a cut-short file has no EOI), the frame size in the header, then decodes
    every entropy-coded segment (as grayscale, with libjpeg's warnings, e.g. "premature end of data", as
    errors), so truncation or a damaged scan is found without the colour conversion of a real decode.
    """
    if payload[:2] != b"\xff\xd8":
        return f"not a JPEG: expected SOI marker ff d8, found {payload[:2].hex(' ')!r}"
    if payload[-2:] != b"\xff\xd9":
        return f"truncated JPEG: no EOI marker ff d9 at the end ({len(payload)} bytes, ends {payload[-2:].hex(' ')!r})"
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(payload)
        if (height, width) != tuple(size_hw):
            return f"JPEG is {height} x {width}, expected {size_hw[0]} x {size_hw[1]}"
        simplejpeg.decode_jpeg(payload, colorspace="GRAY", fastdct=True, strict=True)
    except ValueError as error:
        return f"corrupt JPEG: {error}"
    return None


ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {"jpg": encode_jpg, "lz4": encode_lz4, "npy": encode_npy}
DECODERS: dict[str, Callable[[bytes], Any]] = {"jpg": decode_jpg, "lz4": decode_lz4_any, "npy": decode_npy}


def encode(kind: str, array: np.ndarray) -> bytes:
    """Encode `array` with the codec named `kind` (`jpg`, `lz4`, `npy`)."""
    if kind not in ENCODERS:
        raise KeyError(f"unknown codec {kind!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[kind](array)


def decode(kind: str, payload: bytes) -> Any:
    """Decode `payload` with the codec named `kind` (an `LSC2` lz4 payload gives group → arrays)."""
    if kind not in DECODERS:
        raise KeyError(f"unknown codec {kind!r}; known: {sorted(DECODERS)}")
    return DECODERS[kind](payload)


def codec_of(member_name: str) -> str:
    """The codec of a member from its last extension: `arrays.lz4` → `lz4`."""
    return member_name.rsplit(".", 1)[-1]
