"""The `LSC2` array container: named GROUPS of named arrays, each group one independently decodable block
(`encode_arrays` / `decode_arrays` / `decode_group`); the sample format stores one group per sensor variant.


      magic "LSC2" | uint8 outer | uint8 num_groups | per group: uint8 name length, ASCII name,
      uint32 LE block size | the group blocks, in that order
      a group block = the `outer` codec (0 none, 1 lz4 block, size-prefixed, 2 raw deflate: zlib, wbits -15,
      3 uint32 LE decoded size | one zstd frame) over:  uint32 LE size of the lz4 block | the lz4 block | tail
      the lz4 block (starting with its uint32 LE uncompressed size, as lz4.block's store_size; primed with the
      fixed dictionary `ARRAYS_DICT`) decompresses to the head; head + tail is the logical group buffer:
          uint32 LE table length | table (UTF-8 JSON) | zeros to a multiple of 8 | data
      table = {"arrays": [{"name", "dtype" (numpy str, e.g. "<f2"), "shape", "filter"}, ...],
               "attrs": {...} (optional), "tail": k (optional: the last k arrays are in the tail)}
      data  = uint32 LE dims, one per array whose shape starts with -1 (its first dimension), in table order |
              zeros to a multiple of 8 | each array's STORED bytes (after its filter chain), in table order,
              each followed by zeros to a multiple of 8 (the last `tail` arrays' bytes: the tail, not lz4'd)

  Variable first dimensions (box rows, radar points, run counts) live in the dims, so every sample of a
  pipeline has byte-equal tables: a reader parses the table once and caches what it derives from it.
  `attrs` (optional) is a JSON object (a sample's scalar targets). Decoding a group is one zstd (or
  inflate) call, one lz4 call and `np.frombuffer` views. Arrays lz4 cannot shrink (run lengths) go to the tail: only the
  outer codec sees them, which compresses them better without lz4's framing in between.
  Why an outer codec: the lz4 block keeps decoding of the larger arrays fast, but lz4 spends one byte per 255
  bytes of a long match and codes literals/offsets without entropy coding; an entropy coder over that SMALL
  block (a few KB) and the tail more than halves them (one measured group: 12,056 → 5,601 bytes by deflate).
  Default: zstd (level `ZSTD_LEVEL`, through pyarrow's codec): on 64 synthetic groups 1.6% smaller than
  deflate and decoded in less than half of inflate's time (~26 vs ~60 us a group); deflate, lz4 and
  uncompressed payloads stay readable.
  Filters: `array_filters`.
"""

from __future__ import annotations

import functools
import json
import struct
import zlib
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

import lz4.block
import numpy as np

from lead_stream.core.array_filters import (
    ARRAY_ALIGN,
    Layout,
    StoredArray,
    aligned,
    apply_filter,
    array_spec,
    filter_chain,
)

ARRAYS_MAGIC = b"LSC2"
_OLD_MAGICS = (b"LSC1",)  # earlier container versions: caches built by older lead-stream releases
_GROUP_SIZE = struct.Struct("<I")
_TABLE_LEN = struct.Struct("<I")
LZ4_HC_MAX_LEVEL = 12
OUTER_CODECS = {"none": 0, "lz4": 1, "deflate": 2, "zstd": 3}
ARRAY_OUTER = "zstd"
ZSTD_LEVEL = 12  # encoding ~0.5 ms a group; higher levels shrink a group by < 1% for 2-4x the time
_HEADER_PEEK = 64  # bytes read at once to parse a container header (3 groups with short names need ~40)
VARIABLE = -1  # a table shape's first entry: the array's first dimension is stored in the group's dims
# Primes the innermost lz4 pass of every group (lz4's "dictionary"): the sample format's table, so a group's
# table costs a few bytes instead of ~700. Any table still works; changing these bytes needs a new magic.
ARRAYS_DICT = (
    b'{"arrays":[{"dtype":"|u1","filter":"transpose","name":"depth","shape":[96,288]},'
    b'{"dtype":"<f4","filter":"none","name":"radar_detections","shape":[20,4]},'
    b'{"dtype":"<f4","filter":"none","name":"target_point","shape":[2]},'
    b'{"dtype":"<f4","filter":"none","name":"target_point_previous","shape":[2]},'
    b'{"dtype":"<f4","filter":"none","name":"target_point_next","shape":[2]},'
    b'{"dtype":"<f4","filter":"none","name":"future_waypoints","shape":[8,2]},'
    b'{"dtype":"<f4","filter":"none","name":"future_yaws_rad","shape":[8]},'
    b'{"dtype":"<f4","filter":"none","name":"route","shape":[10,2]},'
    b'{"dtype":"<f4","filter":"none","name":"ego","shape":[6]},'
    b'{"dtype":"<f4","filter":"none","name":"boxes","shape":[-1,9]},'
    b'{"dtype":"<f4","filter":"shuffle","name":"box_waypoints","shape":[-1,8,2]},'
    b'{"dtype":"|u1","filter":"none","name":"box_num_waypoints","shape":[-1]},'
    b'{"dtype":"<f2","filter":"transpose+shuffle","name":"radar","shape":[-1,5]},'
    b'{"dtype":"|u1","filter":"none","name":"lidar_bev_values","shape":[-1]},'
    b'{"dtype":"|u1","filter":"none","name":"lidar_bev_lengths","shape":[-1]},'
    b'{"dtype":"<u2","filter":"shuffle","name":"lidar_bev_long","shape":[-1]},'
    b'{"dtype":"|u1","filter":"none","name":"semantic_values","shape":[-1]},'
    b'{"dtype":"|u1","filter":"none","name":"semantic_lengths","shape":[-1]},'
    b'{"dtype":"<u2","filter":"shuffle","name":"semantic_long","shape":[-1]},'
    b'{"dtype":"|u1","filter":"none","name":"bev_semantic_values","shape":[-1]},'
    b'{"dtype":"|u1","filter":"none","name":"bev_semantic_lengths","shape":[-1]},'
    b'{"dtype":"<u2","filter":"shuffle","name":"bev_semantic_long","shape":[-1]}]}'
)


def _stored_bytes(group: str, name: str, array: np.ndarray, filter_name: str) -> bytes:
    if array.dtype.hasobject:
        raise ValueError(f"group {group!r} array {name!r}: object dtype cannot be stored")
    stored = np.ascontiguousarray(array)
    for step in filter_chain(filter_name):
        stored = apply_filter(step, name, stored)
    raw = stored.tobytes()
    return raw + bytes(-len(raw) % ARRAY_ALIGN)


def _encode_group(
    name: str,
    arrays: Mapping[str, np.ndarray],
    filters: Mapping[str, str],
    variable: Collection[str],
    unpacked: Collection[str],
    attrs: Mapping[str, Any] | None,
    level: int,
    outer: int,
) -> bytes:
    entries, dims, parts, tail = [], [], [], 0
    for array_name, array in arrays.items():
        array = np.asarray(array)
        filter_name = filters.get(array_name, "none")
        shape = list(array.shape)
        if array_name in variable:
            if array.ndim == 0:
                raise ValueError(
                    f"group {name!r} array {array_name!r}: a variable first dimension needs ndim >= 1"
                )
            dims.append(shape[0])
            shape[0] = VARIABLE
        if array_name in unpacked:
            tail += 1
        elif tail:
            raise ValueError(
                f"group {name!r}: array {array_name!r} follows an array stored outside lz4; "
                f"those must come last"
            )
        entries.append({"name": array_name, "dtype": array.dtype.str, "shape": shape, "filter": filter_name})
        parts.append(_stored_bytes(name, array_name, array, filter_name))
    table_dict: dict[str, Any] = {"arrays": entries}
    if attrs is not None:
        table_dict["attrs"] = dict(attrs)
    if tail:
        table_dict["tail"] = tail
    table = json.dumps(table_dict, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    head = _TABLE_LEN.pack(len(table)) + table
    dims_bytes = struct.pack(f"<{len(dims)}I", *dims)
    split = len(parts) - tail
    block = b"".join(
        [head, bytes(-len(head) % ARRAY_ALIGN), dims_bytes, bytes(-len(dims_bytes) % ARRAY_ALIGN)]
        + parts[:split]
    )
    if level > 0:
        block = lz4.block.compress(
            block, mode="high_compression", compression=level, store_size=True, dict=ARRAYS_DICT
        )
    else:
        block = lz4.block.compress(block, store_size=True, dict=ARRAYS_DICT)
    block = _GROUP_SIZE.pack(len(block)) + block + b"".join(parts[split:])
    if outer == OUTER_CODECS["lz4"]:
        block = lz4.block.compress(
            block, mode="high_compression", compression=LZ4_HC_MAX_LEVEL, store_size=True
        )
    elif outer == OUTER_CODECS["deflate"]:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        block = packer.compress(block) + packer.flush()
    elif outer == OUTER_CODECS["zstd"]:
        block = _GROUP_SIZE.pack(len(block)) + _zstd().compress(block, asbytes=True)
    return block


@functools.cache
def _zstd() -> Any:
    """pyarrow's zstd codec (a dependency already: the index tables are Parquet)."""
    import pyarrow

    return pyarrow.Codec("zstd", compression_level=ZSTD_LEVEL)


def _zstd_decode(block: memoryview, group: str) -> bytes:
    """uint32 LE decoded size | zstd frame → the decoded bytes (ValueError on a corrupt or short frame)."""
    if len(block) < _GROUP_SIZE.size:
        raise ValueError(f"group {group!r}: zstd block too short for its size")
    (size,) = _GROUP_SIZE.unpack_from(block, 0)
    try:
        return _zstd().decompress(block[_GROUP_SIZE.size :], decompressed_size=size, asbytes=True)
    except OSError as err:  # pyarrow reports codec failures as OSError
        raise ValueError(f"group {group!r}: corrupt zstd block ({err})") from err


def encode_arrays(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    *,
    filters: Mapping[str, str] | None = None,
    variable: Collection[str] = (),
    unpacked: Collection[str] = (),
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
    level: int = LZ4_HC_MAX_LEVEL,
    outer: str = ARRAY_OUTER,
) -> bytes:
    """Named groups of named arrays → one `LSC2` payload; each group is its own block (module doc).

    Args:
        groups: group name (ASCII, 1..255 bytes) → {array name → array}; stored in this order. A group may
            have no arrays (then it usually carries `attrs`).
        filters: array name → filter chain ("none", "transpose", "nibble", "shuffle", or steps joined by
            "+", applied left to right); missing names use none.
        variable: array names whose first dimension varies from sample to sample: the table says -1 and
            the size goes to the group's dims, so equal layouts give byte-equal tables.
        unpacked: array names stored after the lz4 block, compressed only by the outer codec: data lz4
            cannot shrink (run lengths) compresses better without lz4's framing. They must come last in
            their group.
        attrs: group name → JSON-able dict stored in that group's table (e.g. a sample's scalar targets).
        level: lz4 high-compression level 1..12 of the first pass (decoding speed does not depend on it);
            0 = fast mode.
        outer: codec over each group's lz4 block: "none", "lz4", "deflate" or "zstd" (see the module doc).

    Raises:
        ValueError: an object dtype, a filter that does not fit its array, or a bad group name.
    """
    filters = filters or {}
    attrs = attrs or {}
    if outer not in OUTER_CODECS:
        raise ValueError(f"outer must be one of {sorted(OUTER_CODECS)}, got {outer!r}")
    if not 1 <= len(groups) <= 255:
        raise ValueError(f"1..255 groups expected, got {len(groups)}")
    unknown = set(attrs) - set(groups)
    if unknown:
        raise ValueError(f"attrs for unknown groups {sorted(unknown)}")
    header, blocks = [ARRAYS_MAGIC, bytes([OUTER_CODECS[outer], len(groups)])], []
    for name, arrays in groups.items():
        encoded_name = name.encode("ascii")
        if not 1 <= len(encoded_name) <= 255:
            raise ValueError(f"group name {name!r} must be 1..255 ASCII bytes")
        block = _encode_group(
            name, arrays, filters, variable, unpacked, attrs.get(name), level, OUTER_CODECS[outer]
        )
        header += [bytes([len(encoded_name)]), encoded_name, _GROUP_SIZE.pack(len(block))]
        blocks.append(block)
    return b"".join(header + blocks)


class TableEntry(NamedTuple):
    """One array of a group table."""

    name: str
    dtype: str  # numpy dtype string, e.g. "<f4"
    shape: tuple[int, ...]  # first entry VARIABLE (-1) when the size is in the group's dims
    filter: str  # filter chain as stored ("none", "transpose+shuffle", ...)

    @property
    def variable(self) -> bool:
        return bool(self.shape) and self.shape[0] == VARIABLE


class GroupTable:
    """A parsed group table, one object per distinct table bytes (`_group_table` caches them).

    With variable first dimensions in the dims vector the table is the same for every sample of a pipeline,
    so a consumer can cache what it derives from it (hashed by identity). `fixed_offsets[i]` is entry i's
    offset from the start of the data when no variable array precedes it, else None.
    """

    __slots__ = ("attrs", "dims_bytes", "entries", "fixed_offsets", "num_dims")

    def __init__(self, entries: tuple[TableEntry, ...], attrs: dict[str, Any] | None) -> None:
        self.entries = entries
        self.attrs = attrs
        self.num_dims = sum(entry.variable for entry in entries)
        self.dims_bytes = aligned(4 * self.num_dims)
        offsets: list[int | None] = []
        pos: int | None = self.dims_bytes
        for entry in entries:
            if entry.variable:
                pos = None
            offsets.append(pos)
            if pos is not None:
                _, layouts, count = array_spec(entry.dtype, entry.filter, entry.shape)
                pos += aligned(count * layouts[-1][1].itemsize)
        self.fixed_offsets = tuple(offsets)

    def locate(
        self, raw: bytes | memoryview, base: int
    ) -> list[tuple[str, tuple[str, ...], tuple[Layout, ...], int, int]]:
        """Per array (name, filter chain, layouts, stored element count, byte offset in `raw`), in table order.

        Raises:
            ValueError: the dims vector or an array runs past the end of `raw`.
        """
        end = len(raw)
        if base + 4 * self.num_dims > end:
            raise ValueError("group block ends inside its dims")
        dims = iter(struct.unpack_from(f"<{self.num_dims}I", raw, base))
        out = []
        pos = base + self.dims_bytes
        for entry in self.entries:
            shape = (next(dims),) + entry.shape[1:] if entry.variable else entry.shape
            chain, layouts, count = array_spec(entry.dtype, entry.filter, shape)
            nbytes = count * layouts[-1][1].itemsize
            if pos + nbytes > end:
                raise ValueError(f"array {entry.name!r}: shape {shape} runs past the block end")
            out.append((entry.name, chain, layouts, count, pos))
            pos += aligned(nbytes)
        return out


@functools.lru_cache(maxsize=4096)
def _group_table(table: bytes) -> GroupTable:
    """Parsed group table (cached per distinct table bytes)."""
    parsed = json.loads(table)
    entries = []
    for entry in parsed["arrays"]:
        shape = tuple(int(d) for d in entry["shape"])
        if any(d < 0 for d in shape[1:]) or (shape and shape[0] < VARIABLE):
            raise ValueError(f"array {entry['name']!r}: bad shape {list(shape)} in the group table")
        probe = (0,) + shape[1:] if shape and shape[0] == VARIABLE else shape
        array_spec(entry["dtype"], entry["filter"], probe)  # validates dtype and filter
        entries.append(TableEntry(entry["name"], entry["dtype"], shape, entry["filter"]))
    return GroupTable(tuple(entries), parsed.get("attrs"))


def array_groups(payload: bytes | memoryview) -> dict[str, tuple[int, int]]:
    """Group name → (start, end) of its block in an `LSC2` payload (no decompression).

    Raises:
        ValueError: not an `LSC2` payload (an older container names the rebuild), or a truncated header.
    """
    view = memoryview(payload)
    head = bytes(view[:_HEADER_PEEK])  # one copy: every group entry of a usual container is in here
    magic = head[:4]
    if magic != ARRAYS_MAGIC:
        if magic in _OLD_MAGICS:
            raise ValueError(
                f"array container version {magic.decode()} was written by an older lead-stream; "
                f"rebuild the cache with `lead-stream shard` (this version reads {ARRAYS_MAGIC.decode()})"
            )
        raise ValueError(f"not a lead-stream array container (magic {magic!r}, expected {ARRAYS_MAGIC!r})")
    if len(head) < 6:
        raise ValueError("truncated array container header")
    pos, sizes = 6, []
    for _ in range(head[5]):
        if pos >= len(head) or pos + 1 + head[pos] + _GROUP_SIZE.size > len(head):
            if len(head) == len(view):
                raise ValueError("truncated array container header")
            head = bytes(view)  # a header longer than the peek (many or long group names)
            if pos >= len(head) or pos + 1 + head[pos] + _GROUP_SIZE.size > len(head):
                raise ValueError("truncated array container header")
        name_len = head[pos]
        name = head[pos + 1 : pos + 1 + name_len].decode("ascii")
        (size,) = _GROUP_SIZE.unpack_from(head, pos + 1 + name_len)
        sizes.append((name, size))
        pos += 1 + name_len + _GROUP_SIZE.size
    out = {}
    for name, size in sizes:
        out[name] = (pos, pos + size)
        pos += size
    if pos != len(view):
        raise ValueError(f"array container is {len(view)} bytes, its header says {pos}")
    return out


def decode_group_block(payload: bytes | memoryview, group: str) -> tuple[bytes, int, GroupTable]:
    """Decompress ONE group of an `LSC2` payload: (block bytes, start of its data (the dims), parsed table).

    `table.locate(raw, base)` gives every array's position; `decode_group_stored` wraps them as views.

    Raises:
        KeyError: no such group.  ValueError: a malformed container.  lz4.block.LZ4BlockError: a corrupt block.
    """
    view = memoryview(payload)
    start, end = array_groups(view)[group]
    outer = view[4]
    raw = view[start:end]
    if outer == OUTER_CODECS["lz4"]:
        raw = lz4.block.decompress(raw)
    elif outer == OUTER_CODECS["zstd"]:
        raw = _zstd_decode(raw, group)
    elif outer == OUTER_CODECS["deflate"]:
        raw = zlib.decompress(raw, -15)
    elif outer != OUTER_CODECS["none"]:
        raise ValueError(f"unknown outer codec {outer} in array container")
    head_end = _prefixed_end(raw, group, "lz4 block")
    head = lz4.block.decompress(raw[_GROUP_SIZE.size : head_end], dict=ARRAYS_DICT)
    raw = head + raw[head_end:] if head_end < len(raw) else head  # arrays stored after the lz4 block follow
    table_end = _prefixed_end(raw, group, "table")
    return raw, aligned(table_end), _group_table(raw[_TABLE_LEN.size : table_end])


def _prefixed_end(raw: bytes | memoryview, group: str, what: str) -> int:
    """End of the section that starts `raw` with its uint32 LE length.

    Raises:
        ValueError: `raw` is shorter than the length or the section.
    """
    if len(raw) < _TABLE_LEN.size:
        raise ValueError(f"group {group!r}: block too short for its {what}")
    end = _TABLE_LEN.size + _TABLE_LEN.unpack_from(raw, 0)[0]
    if end > len(raw):
        raise ValueError(f"group {group!r}: its {what} runs past the block end")
    return end


def decode_group_stored(payload: bytes | memoryview, group: str) -> dict[str, StoredArray]:
    """Decompress ONE group of an `LSC2` payload; every array is a read-only view of its stored layout.

    Raises:
        KeyError: no such group.  ValueError: a malformed container.  lz4.block.LZ4BlockError: a corrupt block.
    """
    raw, base, table = decode_group_block(payload, group)
    out = {}
    for name, chain, layouts, count, offset in table.locate(raw, base):
        stored_shape, stored_dtype = layouts[-1]
        data = np.frombuffer(raw, dtype=stored_dtype, count=count, offset=offset).reshape(stored_shape)
        out[name] = StoredArray(data, chain, layouts)
    return out


def decode_group(payload: bytes | memoryview, group: str) -> dict[str, np.ndarray]:
    """One group of an `LSC2` payload: array name → array, in stored order.

    Arrays without nibble/shuffle filters are read-only zero-copy views into one decompressed buffer (a
    transposed array is the `.T` view of its stored layout); the others are new arrays.
    """
    return {name: stored.restore() for name, stored in decode_group_stored(payload, group).items()}


def decode_attrs(payload: bytes | memoryview, group: str) -> dict[str, Any]:
    """The `attrs` dict of one group's table ({} when it has none)."""
    _, _, table = decode_group_block(payload, group)
    return dict(table.attrs or {})


def decode_arrays(payload: bytes | memoryview) -> dict[str, Any]:
    """Inverse of `encode_arrays`: group name → {array name → array}; a group without arrays gives its attrs."""
    out: dict[str, Any] = {}
    for group in array_groups(payload):
        _, _, table = decode_group_block(payload, group)
        out[group] = (
            decode_group(payload, group) if table.entries or table.attrs is None else dict(table.attrs)
        )
    return out
