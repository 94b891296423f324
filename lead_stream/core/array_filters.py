"""Reversible, exact array layouts applied before the container compresses an array (chained with '+').

`none`; `transpose` (a 2-D array stored as its C-order transpose, for column-wise structure);
`nibble` (uint8 values 0..15, even first axis: rows 2k and 2k+1 share one row of bytes, row 2k in the high
4 bits; vertically paired label rows merge their edges, so lz4 sees fewer);
`shuffle` (byte j of every element stored together, then byte j + 1: float exponents and the high bytes of
small integers compress). `StoredArray.restore()` undoes a chain; `array_spec` gives the layouts.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

ARRAY_FILTERS = ("none", "transpose", "nibble", "shuffle")
ARRAY_ALIGN = 8
Layout = tuple[tuple[int, ...], np.dtype]


def aligned(nbytes: int) -> int:
    return nbytes + -nbytes % ARRAY_ALIGN


def filter_chain(filter_name: str) -> tuple[str, ...]:
    chain = tuple(f for f in filter_name.split("+") if f != "none")
    unknown = [f for f in chain if f not in ARRAY_FILTERS]
    if unknown:
        raise ValueError(f"unknown filter {unknown[0]!r}; known: {ARRAY_FILTERS} (chain them with '+')")
    return chain


def _filtered_layout(step: str, shape: tuple[int, ...], dtype: np.dtype) -> Layout:
    """(shape, dtype) after one filter step."""
    if step == "transpose":
        return shape[::-1], dtype
    if step == "nibble":
        return (shape[0] // 2,) + shape[1:], dtype
    return (dtype.itemsize, math.prod(shape)), np.dtype(np.uint8)  # shuffle


def apply_filter(step: str, name: str, array: np.ndarray) -> np.ndarray:
    if step == "transpose":
        if array.ndim != 2:
            raise ValueError(f"array {name!r}: filter 'transpose' needs 2 dims, got shape {array.shape}")
        return np.ascontiguousarray(array.T)
    if step == "nibble":
        if array.dtype != np.uint8 or array.ndim == 0 or array.shape[0] % 2:
            raise ValueError(
                f"array {name!r}: filter 'nibble' needs uint8 with an even first axis, "
                f"got {array.dtype} {array.shape}"
            )
        if array.size and int(array.max()) > 15:
            raise ValueError(f"array {name!r}: filter 'nibble' needs values 0..15, found {int(array.max())}")
        return np.ascontiguousarray((array[0::2] << 4) | array[1::2])
    flat = np.ascontiguousarray(array).reshape(-1)  # shuffle: byte j of every element, then byte j + 1
    return np.ascontiguousarray(flat.view(np.uint8).reshape(flat.size, array.dtype.itemsize).T)


def _undo_filter(step: str, data: np.ndarray, layout: Layout) -> np.ndarray:
    """Undo one filter step; `layout` is the (shape, dtype) before that step."""
    shape, dtype = layout
    if step == "transpose":
        return data.T
    if step == "nibble":
        return unpack_nibbles(data)
    return np.ascontiguousarray(data.T).view(dtype).reshape(shape)  # shuffle


class StoredArray(NamedTuple):
    """One array of an `LSC2` group as stored: `data` is a read-only view into the decompressed block."""

    data: np.ndarray  # stored layout (after the filter chain)
    filters: tuple[str, ...]  # filter chain, applied in order when encoding
    layouts: tuple[Layout, ...]  # (shape, dtype) before each filter step, then the stored one

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the decoded array."""
        return self.layouts[0][0]

    def restore(self) -> np.ndarray:
        """The original array: a zero-copy view unless the chain has nibble or shuffle."""
        data = self.data
        for step, layout in zip(reversed(self.filters), reversed(self.layouts[:-1]), strict=True):
            data = _undo_filter(step, data, layout)
        return data


@functools.lru_cache(maxsize=4096)
def array_spec(
    dtype_str: str, filter_name: str, shape: tuple[int, ...]
) -> tuple[tuple[str, ...], tuple[Layout, ...], int]:
    """(filter chain, layouts: the array's, after each filter step, count of stored elements)."""
    dtype = np.dtype(dtype_str)
    if dtype.hasobject:
        raise ValueError(f"object dtype {dtype_str!r} cannot be stored")
    chain = filter_chain(filter_name)
    layouts = [(shape, dtype)]
    for step in chain:
        layouts.append(_filtered_layout(step, *layouts[-1]))
    return chain, tuple(layouts), math.prod(layouts[-1][0])


def unpack_nibbles(packed: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Undo the `nibble` filter: (H/2, ...) packed rows → (H, ...) uint8, written into `out` if given.

    Two passes over contiguous rows (high nibbles → even rows, low nibbles → odd rows), no temporary.
    """
    shape = (packed.shape[0] * 2,) + packed.shape[1:]
    if out is None:
        out = np.empty(shape, np.uint8)
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    np.right_shift(packed, 4, out=out[0::2])
    np.bitwise_and(packed, 15, out=out[1::2])
    return out
