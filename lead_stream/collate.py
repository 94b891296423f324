"""Raw sample members (`features` doc) → one `Batch`: decode the chosen variant straight into batch arrays.

Per sample only the chosen variant's members are decoded: its JPEG (`rgb.jpg` or `rgb_pert.jpg`) directly
into the batch's (B, H, W, 3) buffer, and its group of `arrays.lz4` (one zstd + one lz4 call on a few KB;
the other variant's block is skipped), whose arrays are views written once into their batch slots: the
LiDAR counts and the label rasters stay run-length coded (a few KB of runs per sample instead of 0.6 MB of
pixels; `Batch.to(device)` expands them where the batch is used), depth is copied into its slot, the small
float arrays move with one copy, and the ego scalars ride in the same copy (no JSON).
Boxes are padded to 90 rows (`num_boxes` counts the real ones); radar points go to their sensor's block of
75 rows (300 in all, float16 widened to float32). LiDAR counts and depth bytes stay uint8 (the model scales
them on the device, `batch`). A group table is the same for every sample of a cache (`codecs` keeps variable
sizes out of it), so it is checked against the batch layout once (`_group_plan`) and a sample costs no
per-array validation beyond the bounds of its variable-size arrays.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch

from lead_stream import runs
from lead_stream.batch import Batch, RunCoded
from lead_stream.codecs import GroupTable, StoredArray, TableEntry, _array_spec, decode_group_block, unpack_nibbles
from lead_stream.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    DEPTH_HEIGHT_PX,
    DEPTH_WIDTH_PX,
    MAX_NUM_BBOXES,
    MAX_RADAR_POINTS_PER_SENSOR,
    NUM_BOX_FIELDS,
    NUM_COMMANDS,
    NUM_RADAR_QUERIES,
    NUM_RADAR_SENSORS,
    NUM_ROUTE_POINTS,
    NUM_WAYPOINTS,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.features import EGO_FIELDS, RUN_CODED, VARIANTS

MEMBER_STEMS = ("rgb.jpg",)       # one per variant: rgb.jpg, rgb_pert.jpg
SHARED_MEMBERS = ("arrays.lz4",)  # one group per variant + the targets group
_PERT = "_pert"
_GROUPS = dict(zip((False, True), VARIANTS))  # arrays.lz4 group of each sensor variant


def variant_member(stem: str, perturbated: bool) -> str:
    """`rgb.jpg` → `rgb_pert.jpg` for the perturbated variant (CONTRACTS §3 names)."""
    if not perturbated:
        return stem
    name, ext = stem.split(".", 1)
    return f"{name}{_PERT}.{ext}"


def expected_members() -> frozenset[str]:
    """Every member name a sample must have (both variants' JPEGs and arrays.lz4)."""
    names = {variant_member(stem, pert) for stem in MEMBER_STEMS for pert in (False, True)}
    return frozenset(names | set(SHARED_MEMBERS))


def command_one_hot(command: int) -> int:
    """LEAD's one-hot index of a RoadOption value: c < 0 → 4, then c - 1, out of range → 3."""
    if command < 0:
        command = 4
    command -= 1
    return command if 0 <= command < NUM_COMMANDS else 3


def command_one_hot_array(commands: np.ndarray) -> np.ndarray:
    """`command_one_hot` of every entry of an integer array."""
    index = np.where(commands < 0, 4, commands) - 1
    return np.where((index >= 0) & (index < NUM_COMMANDS), index, 3)


# Small float32 arrays of a group, in the order the shard writer stores them (`features.STORED_SPECS`): when
# a group's table has exactly these, unfiltered and back to back, one flat copy moves all of them into `nav`.
_NAV_LAYOUT = (
    ("radar_detections", (NUM_RADAR_QUERIES, 4)),
    ("target_point", (2,)),
    ("target_point_previous", (2,)),
    ("target_point_next", (2,)),
    ("future_waypoints", (NUM_WAYPOINTS, 2)),
    ("future_yaws_rad", (NUM_WAYPOINTS,)),
    ("route", (NUM_ROUTE_POINTS, 2)),
    ("ego", (len(EGO_FIELDS),)),
)
_NAV_SLICES: dict[str, tuple[int, int, tuple[int, ...]]] = {}
_pos = 0
for _name, _shape in _NAV_LAYOUT:
    _NAV_SLICES[_name] = (_pos, _pos + math.prod(_shape), _shape)
    _pos += math.prod(_shape)
NAV_WIDTH = _pos  # float32 values per sample in BatchBuffers.nav
_EGO = {name: _NAV_SLICES["ego"][0] + k for k, name in enumerate(EGO_FIELDS)}  # nav column of each ego field
_DENSE = {  # uint8 per-sample rasters of BatchBuffers: stored array → (attribute, shape); the buffer holds the
    "depth": ("depth_t", (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX)),  # transpose (as stored), the Batch a view of it
}
RASTER_SHAPES = {  # run-coded rasters: per-sample shape in the Batch
    "lidar_bev": (1, BEV_HEIGHT_PX, BEV_WIDTH_PX),
    "semantic": (RGB_HEIGHT_PX, RGB_WIDTH_PX),
    "bev_semantic": (BEV_HEIGHT_PX, BEV_WIDTH_PX),
}
_VARIABLE = ("boxes", "box_waypoints", "box_num_waypoints", "radar") + tuple(
    f"{n}_{part}" for n in RUN_CODED for part in ("values", "lengths", "long"))
_VARIABLE_EXPECTED = {  # (dtype, shape, filter) of each variable-size array of the sample format
    "boxes": ("<f4", (-1, NUM_BOX_FIELDS), "none"),
    "box_waypoints": ("<f4", (-1, NUM_WAYPOINTS, 2), "shuffle"),  # not used by the trainer: skipped
    "box_num_waypoints": ("|u1", (-1,), "none"),                  # not used by the trainer: skipped
    "radar": ("<f2", (-1, 5), "transpose+shuffle"),
    **{f"{n}_values": ("|u1", (-1,), "none") for n in RUN_CODED},
    **{f"{n}_lengths": ("|u1", (-1,), "none") for n in RUN_CODED},
    **{f"{n}_long": ("<u2", (-1,), "shuffle") for n in RUN_CODED},
}
_SENSOR_EDGES = np.arange(NUM_RADAR_SENSORS) + 0.5  # searchsorted bounds of sensor ids 0..3 in sorted points
_F4 = np.dtype("<f4")
_F2 = np.dtype("<f2")
_U1 = np.dtype("u1")
_U2 = np.dtype("<u2")


def _aligned(nbytes: int) -> int:
    return nbytes + -nbytes % 8


@dataclass(frozen=True)
class _GroupPlan:
    """How the sample format's group table maps onto batch rows; built once per distinct table."""

    dense: tuple[tuple[str, int, int, tuple[int, ...], str], ...]  # attr, data offset, count, stored shape, op
    nav: int                  # data offset of the nav arrays, back to back
    dims: struct.Struct       # the dims vector of the variable arrays (`_VARIABLE`, in that order)
    variable_start: int       # data offset of the first variable array
    unit_bytes: tuple[int, ...]  # stored bytes per unit of each variable array's first dimension


def _entries(table: GroupTable) -> dict[str, tuple[int, TableEntry]]:
    return {entry.name: (k, entry) for k, entry in enumerate(table.entries)}


@functools.lru_cache(maxsize=64)
def _group_plan(table: GroupTable) -> _GroupPlan | None:
    """The fast plan when `table` is the sample format's layout (`features.STORED_SPECS`), else None."""
    entries = _entries(table)
    offsets = table.fixed_offsets
    dense = []
    for name, (attr, shape) in _DENSE.items():
        if name not in entries:
            return None
        k, entry = entries[name]
        op = {"nibble": "nibble", "transpose": "transpose", "none": "copy"}.get(entry.filter)
        if entry.dtype != "|u1" or entry.shape != shape or op is None or offsets[k] is None:
            return None
        stored = (shape[0] // 2, shape[1]) if op == "nibble" else shape[::-1] if op == "transpose" else shape
        dense.append((attr, offsets[k], math.prod(stored), stored, op))
    nav_names = [name for name, _ in _NAV_LAYOUT]
    if any(name not in entries for name in nav_names):
        return None
    first = entries[nav_names[0]][0]
    for j, (name, shape) in enumerate(_NAV_LAYOUT):
        k, entry = entries[name]
        if k != first + j or entry.dtype != "<f4" or entry.filter != "none" or entry.shape != shape:
            return None
        if offsets[k] is None or offsets[k] != offsets[first] + 4 * (_NAV_SLICES[name][0]):
            return None
    variable = [entry for entry in table.entries if entry.variable]
    if [e.name for e in variable] != list(_VARIABLE) or table.entries[-len(variable):] != tuple(variable):
        return None
    if any((e.dtype, e.shape, e.filter) != _VARIABLE_EXPECTED[e.name] for e in variable):
        return None
    fixed_end = table.dims_bytes
    for k, entry in enumerate(table.entries[: -len(variable)]):
        _, layouts, count = _array_spec(entry.dtype, entry.filter, entry.shape)
        fixed_end = offsets[k] + _aligned(count * layouts[-1][1].itemsize)
    units = tuple(math.prod(e.shape[1:]) * np.dtype(e.dtype).itemsize for e in variable)
    return _GroupPlan(tuple(dense), offsets[first], struct.Struct(f"<{len(variable)}I"), fixed_end, units)


_JPEG_NAMES = {False: "rgb.jpg", True: f"rgb{_PERT}.jpg"}


class _RowViews:
    """Per-row views of stored arrays, joined once per batch (`joined()`, cached until a row changes)."""

    def __init__(self, size: int) -> None:
        self.rows: list = [None] * size
        self._cache: tuple | None = None

    def set(self, i: int, row: object) -> None:
        self.rows[i] = row
        self._cache = None

    def copy_row(self, dst: int, src: int) -> None:
        self.set(dst, self.rows[src])

    def clear(self) -> None:
        self.rows = [None] * len(self.rows)
        self._cache = None

    def joined(self) -> tuple:
        if self._cache is None:
            self._cache = self._join()
        return self._cache

    def _join(self) -> tuple:
        raise NotImplementedError


class _Runs(_RowViews):
    """The run-coded rasters of a batch: row (raster k, sample i) keeps views of its stored runs until `coded()`.

    Nothing is copied per sample: the joins concatenate the whole batch's runs (a few KB per sample, all
    rasters at once) and check, in one reduction, that every (raster, sample) covers its raster exactly.
    """

    def __init__(self, size: int, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__(size * len(shapes))
        self.size = size
        self.names = tuple(shapes)
        self._first_row = {name: k * size for k, name in enumerate(self.names)}
        self.shapes = shapes
        self.pixels = np.repeat([math.prod(shape) for shape in shapes.values()], size)  # per row
        self._empty = {}
        for name, shape in shapes.items():  # a zero raster, for rows never filled
            values, lengths = runs.encode_runs(np.zeros(math.prod(shape), np.uint8))
            short, long = runs.split_lengths(lengths)
            self._empty[name] = (values, short, np.ascontiguousarray(long.view(np.uint8).reshape(-1, 2).T))

    def fill(self, name: str, i: int, values: np.ndarray, short: np.ndarray, shuffled_long: np.ndarray) -> None:
        """Raster `name` of sample i := runs as stored: (n,) uint8 values, (n,) uint8 short lengths (255 =
        long) and the (2, m) uint8 low/high byte planes of the long lengths (`runs.split_lengths`)."""
        self.set(self._first_row[name] + i, (values, short, shuffled_long))

    def copy_sample(self, dst: int, src: int) -> None:
        for k in range(len(self.names)):
            self.copy_row(k * self.size + dst, k * self.size + src)

    def _join(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        rows = [row if row is not None else self._empty[self.names[j // self.size]]
                for j, row in enumerate(self.rows)]
        counts = np.array([row[0].shape[0] for row in rows], np.intp)
        values = np.concatenate([row[0] for row in rows])
        lengths = np.concatenate([row[1] for row in rows]).astype(np.int32)
        planes = np.concatenate([row[2] for row in rows], axis=1)  # (2, M) low / high bytes
        long = planes[1].astype(np.int32)
        long <<= 8
        long |= planes[0]
        marks = np.flatnonzero(lengths == runs.LONG)
        problems: dict[int, str] = {}
        if marks.size == long.size:
            lengths[marks] = long
        else:  # some row's markers and long lengths disagree: name those rows, keep the others usable
            row_of = np.repeat(np.arange(len(rows)), counts)
            per_row = np.bincount(row_of[marks], minlength=len(rows))
            for j, (row, found) in enumerate(zip(rows, per_row.tolist())):
                if found != row[2].shape[1]:
                    problems[j] = f"{found} long-run markers but {row[2].shape[1]} long lengths"
        return values, lengths, counts, problems

    def check(self) -> dict[int, str]:
        """Samples whose runs do not cover their raster (or whose long lengths do not match) → the problem."""
        _, lengths, counts, problems = self.joined()
        if not problems:
            starts = np.zeros(len(counts), np.intp)
            np.cumsum(counts[:-1], out=starts[1:])
            totals = np.add.reduceat(lengths, starts)
            totals[counts == 0] = 0  # reduceat repeats the next element for an empty segment
            problems = {int(j): f"runs cover {int(totals[j])} pixels, expected {int(self.pixels[j])}"
                        for j in np.flatnonzero(totals != self.pixels).tolist()}
        out: dict[int, str] = {}
        for j, problem in problems.items():
            out.setdefault(j % self.size, f"{self.names[j // self.size]}: {problem}")
        return out

    def coded(self) -> dict[str, RunCoded]:
        """Raster name → its `RunCoded` (slices of the joined arrays)."""
        values, lengths, counts, problems = self.joined()
        if problems:
            raise ValueError(f"bad runs in rows {sorted(problems)}: {next(iter(problems.values()))}")
        bounds = np.concatenate([[0], np.cumsum(counts)])[:: self.size].tolist()
        return {name: RunCoded(torch.from_numpy(values[bounds[k] : bounds[k + 1]]),
                               torch.from_numpy(lengths[bounds[k] : bounds[k + 1]]),
                               (self.size, *self.shapes[name]))
                for k, name in enumerate(self.names)}


class _RadarRows(_RowViews):
    """Each row's (n, 5) radar points until `place` puts them in their sensors' blocks of 75 rows."""

    def _join(self) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """All rows' points at once: (points (N, 5), flat slot in the batch's (B * 300) rows) and bad rows."""
        empty = np.zeros((0, 5), np.float32)
        rows = [p if p is not None else empty for p in self.rows]
        counts = np.array([len(p) for p in rows], np.intp)
        points = np.concatenate(rows, dtype=np.float32)
        row_of = np.repeat(np.arange(len(rows)), counts)
        ids = points[:, 4]
        sensor = ids.astype(np.intp)
        problems: dict[int, str] = {}
        valid = (sensor == ids) & (sensor >= 0) & (sensor < NUM_RADAR_SENSORS)
        if not valid.all():
            for i in np.unique(row_of[~valid]).tolist():
                problems[i] = f"radar sensor ids outside 0..{NUM_RADAR_SENSORS - 1}"
            sensor = np.where(valid, sensor, 0)
        key = row_of * NUM_RADAR_SENSORS + sensor  # (row, sensor) block of every point
        if (key[1:] < key[:-1]).any():  # shards store each row's points grouped by sensor; sort otherwise
            order = np.argsort(key, kind="stable")
            points, row_of, key = points[order], row_of[order], key[order]
        rank = np.arange(len(key)) - np.searchsorted(key, key)  # position within its (row, sensor) block
        over = rank >= MAX_RADAR_POINTS_PER_SENSOR
        if over.any():
            for block in np.unique(key[over]).tolist():
                i, sensor_id = divmod(block, NUM_RADAR_SENSORS)
                count = int((key == block).sum())
                problems.setdefault(i, f"{count} points for sensor {sensor_id} (max {MAX_RADAR_POINTS_PER_SENSOR})")
        return points, key * MAX_RADAR_POINTS_PER_SENSOR + rank, problems

    def problems(self) -> dict[int, str]:
        return self.joined()[2]

    def place(self, out: np.ndarray) -> None:
        """`out` (B, 300, 5) := every good row's points in its sensor's block of 75 rows, zeros elsewhere."""
        points, slot, problems = self.joined()
        flat = out.reshape(-1, 5)
        flat[...] = 0.0
        if problems:
            keep = ~np.isin(slot // (NUM_RADAR_SENSORS * MAX_RADAR_POINTS_PER_SENSOR), list(problems))
            points, slot = points[keep], slot[keep]
        flat[slot] = points


@dataclass
class BatchBuffers:
    """Preallocated numpy arrays for B samples; `fill(i, ...)` writes sample i, `to_batch()` wraps them."""

    size: int

    def __post_init__(self) -> None:
        b = self.size
        self.rgb = np.empty((b, RGB_HEIGHT_PX, RGB_WIDTH_PX, 3), np.uint8)
        for attr, shape in _DENSE.values():  # depth, transposed as the shards store it (uint8)
            setattr(self, attr, np.empty((b, *shape[::-1]), np.uint8))
        self.runs = _Runs(b, RASTER_SHAPES)  # views of every sample's runs until to_batch
        self.boxes = np.zeros((b, MAX_NUM_BBOXES, NUM_BOX_FIELDS), np.float32)
        self.num_boxes = np.zeros(b, np.int64)
        self.radar = np.zeros((b, NUM_RADAR_SENSORS * MAX_RADAR_POINTS_PER_SENSOR, 5), np.float32)
        self.radar_rows = _RadarRows(b)  # (n, 5) points per row until to_batch places them
        self.nav = np.zeros((b, NAV_WIDTH), np.float32)  # _NAV_LAYOUT arrays, flattened back to back
        self.perturbated = np.zeros(b, np.bool_)
        self.frame_idx = np.zeros(b, np.int64)
        self.bucket_idx = np.zeros(b, np.int64)
        self.route_id: list[str] = [""] * b
        self.current_member = ""

    def unreferenced(self) -> bool:
        """True when no tensor of a previous `to_batch` still uses these arrays (safe to refill)."""
        for value in vars(self).values():
            # 3 references = the owner's attribute, the loop variable and getrefcount's argument
            if isinstance(value, np.ndarray) and sys.getrefcount(value) > 3:
                return False
        return True

    def fill(self, i: int, members: dict[str, bytes], *, perturbated: bool) -> None:
        """Decode sample `i`'s chosen variant into row i; `current_member` names the member on error."""
        self.fill_image(i, members, perturbated=perturbated)
        self.fill_arrays(i, members, perturbated=perturbated)

    def fill_image(self, i: int, members: dict[str, bytes], *, perturbated: bool) -> None:
        """The JPEG half of `fill` (a loader decodes a batch's images, then its arrays: each phase's code and
        tables stay in the CPU caches instead of evicting each other sample by sample)."""
        self.current_member = name = _JPEG_NAMES[perturbated]
        rgb = simplejpeg.decode_jpeg(members[name], colorspace="RGB", buffer=self.rgb[i])
        if rgb.shape != self.rgb.shape[1:]:
            raise ValueError(f"decodes to {rgb.shape}, expected {self.rgb.shape[1:]}")

    def fill_arrays(self, i: int, members: dict[str, bytes], *, perturbated: bool) -> None:
        """The arrays.lz4 half of `fill`."""
        self.current_member = name = "arrays.lz4"
        raw, base, table = decode_group_block(members[name], _GROUPS[perturbated])
        plan = _group_plan(table)
        if plan is None:
            self._fill_generic(i, raw, base, table)
        else:
            self._fill_planned(i, raw, base, plan)
        self.perturbated[i] = perturbated

    def _fill_planned(self, i: int, raw: bytes, base: int, plan: _GroupPlan) -> None:
        data = np.frombuffer(raw, _U1)  # one view; every array below is a slice of it
        end = len(raw)
        start = base + plan.variable_start
        if start > end:
            raise ValueError("group block ends inside its fixed-size arrays")
        for attr, offset, count, shape, op in plan.dense:
            stored = data[base + offset : base + offset + count].reshape(shape)
            out = getattr(self, attr)[i]  # transposed layout
            if op == "nibble":
                unpack_nibbles(stored, out=out.T)
            elif op == "transpose":
                out[...] = stored  # stored transposed: a plain copy
            else:
                out[...] = stored.T
        nav = base + plan.nav
        self.nav[i] = data[nav : nav + 4 * NAV_WIDTH].view(_F4)
        dims = plan.dims.unpack_from(raw, base)
        starts, pos = [], start
        for count, unit in zip(dims, plan.unit_bytes):
            starts.append(pos)
            pos += _aligned(count * unit)
        if pos > end:
            raise ValueError("variable-size arrays run past the block end")
        n_boxes, n_radar = dims[0], dims[3]
        if n_boxes > MAX_NUM_BBOXES:
            raise ValueError(f"{n_boxes} boxes (max {MAX_NUM_BBOXES})")
        box_bytes = 4 * NUM_BOX_FIELDS * n_boxes
        self.boxes[i, :n_boxes] = data[starts[0] : starts[0] + box_bytes].view(_F4).reshape(n_boxes, -1)
        self.boxes[i, n_boxes:] = 0.0
        self.num_boxes[i] = n_boxes
        planes = data[starts[3] : starts[3] + 10 * n_radar].reshape(2, 5 * n_radar)  # transpose+shuffle (n, 5) f2
        self._set_radar(i, np.ascontiguousarray(planes.T).view(_F2).reshape(5, n_radar).T)
        for k, name in enumerate(RUN_CODED):
            j = 4 + 3 * k
            n, n_lengths, n_long = dims[j : j + 3]
            if n != n_lengths:
                raise ValueError(f"{name}: {n} run values but {n_lengths} lengths")
            values, short, long = starts[j], starts[j + 1], starts[j + 2]
            self.runs.fill(name, i, data[values : values + n], data[short : short + n],
                                 data[long : long + 2 * n_long].reshape(2, n_long))

    def _fill_generic(self, i: int, raw: bytes, base: int, table: GroupTable) -> None:
        """Any table layout (other filters or order): restore every array, then place it."""
        arrays = {}
        for name, chain, layouts, count, offset in table.locate(raw, base):
            data = np.frombuffer(raw, layouts[-1][1], count, offset).reshape(layouts[-1][0])
            arrays[name] = StoredArray(data, chain, layouts).restore()
        missing = [n for n in list(_DENSE) + [n for n, _ in _NAV_LAYOUT] + list(_VARIABLE) if n not in arrays]
        if missing:
            raise ValueError(f"group lacks arrays {missing}")
        for name, (attr, shape) in _DENSE.items():
            if arrays[name].shape != shape:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
            getattr(self, attr)[i] = arrays[name].T
        for name, (lo, hi, shape) in _NAV_SLICES.items():
            if arrays[name].shape != shape:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
            self.nav[i, lo:hi] = arrays[name].reshape(-1)
        boxes = arrays["boxes"]
        if boxes.ndim != 2 or boxes.shape[0] > MAX_NUM_BBOXES or boxes.shape[1] != NUM_BOX_FIELDS:
            raise ValueError(f"boxes shape {boxes.shape}, expected (<= {MAX_NUM_BBOXES}, {NUM_BOX_FIELDS})")
        self.boxes[i, : len(boxes)] = boxes
        self.boxes[i, len(boxes) :] = 0.0
        self.num_boxes[i] = len(boxes)
        if arrays["radar"].ndim != 2 or arrays["radar"].shape[1] != 5:
            raise ValueError(f"radar shape {arrays['radar'].shape}, expected (n, 5)")
        self._set_radar(i, arrays["radar"])
        for name in RUN_CODED:
            values, short, long = arrays[f"{name}_values"], arrays[f"{name}_lengths"], arrays[f"{name}_long"]
            if values.shape != short.shape or values.ndim != 1 or long.ndim != 1:
                raise ValueError(f"{name}: run values {values.shape} and lengths {short.shape} differ")
            planes = np.ascontiguousarray(long.astype(_U2).view(np.uint8).reshape(-1, 2).T)
            self.runs.fill(name, i, values.astype(np.uint8), short.astype(np.uint8), planes)

    def check_rows(self) -> dict[int, str]:
        """Rows whose run-coded rasters do not cover their raster or whose radar points do not fit their
        sensor blocks → the problem (call after the fills, before `to_batch`)."""
        problems = self.runs.check()
        for i, problem in self.radar_rows.problems().items():
            problems.setdefault(i, problem)
        return problems

    def reset(self) -> None:
        """Forget the previous batch's per-row views before refilling (`BufferPool.take`)."""
        self.runs.clear()
        self.radar_rows.clear()
        self.route_id = [""] * self.size
        self.current_member = ""

    def _set_radar(self, i: int, points: np.ndarray | None) -> None:
        self.radar_rows.set(i, points)

    def _place_radar(self) -> None:
        self.radar_rows.place(self.radar)

    def copy_row(self, dst: int, src: int) -> None:
        """Make row `dst` a copy of row `src` (the skip policy repeats a good sample of the batch)."""
        for name in ("rgb", "depth_t", "boxes", "num_boxes", "nav", "perturbated",
                     "frame_idx", "bucket_idx"):
            array = getattr(self, name)
            array[dst] = array[src]
        self.runs.copy_sample(dst, src)
        self.radar_rows.copy_row(dst, src)
        self.route_id[dst] = self.route_id[src]

    def _nav(self, name: str) -> torch.Tensor:
        lo, hi, shape = _NAV_SLICES[name]
        return torch.from_numpy(np.ascontiguousarray(self.nav[:, lo:hi]).reshape(self.size, *shape))

    def _one_hot(self, field: str) -> torch.Tensor:
        index = command_one_hot_array(self.nav[:, _EGO[field]].astype(np.int64))
        out = np.zeros((self.size, NUM_COMMANDS), np.float32)
        out[np.arange(self.size), index] = 1.0
        return torch.from_numpy(out)

    def _ego(self, field: str, dtype: type = np.float32) -> torch.Tensor:
        column = self.nav[:, _EGO[field]]
        return torch.from_numpy(column != 0 if dtype is np.bool_ else column.astype(dtype))

    def to_batch(self) -> Batch:
        """Wrap the arrays as tensors: no copy but the small per-sample vectors (nav slices, ego scalars).

        The shared tensors use these arrays' memory: refill only when `unreferenced()` (`BufferPool`).
        """
        t = torch.from_numpy
        nav = self._nav
        self._place_radar()
        coded = self.runs.coded()
        return Batch(
            rgb=t(self.rgb).permute(0, 3, 1, 2),  # (B, 3, H, W) view in channels_last memory format
            lidar_bev=coded["lidar_bev"],  # (B, 1, Y, X) uint8 counts, run-coded
            radar=t(self.radar),
            speed_mps=self._ego("speed_mps"),
            semantic=coded["semantic"],
            depth_u8=t(self.depth_t).transpose(1, 2),  # (B, 96, 288) view of the transposed buffer
            bev_semantic=coded["bev_semantic"],
            boxes=t(self.boxes),
            num_boxes=t(self.num_boxes),
            radar_detections=nav("radar_detections"),
            target_point=nav("target_point"),
            target_point_previous=nav("target_point_previous"),
            target_point_next=nav("target_point_next"),
            command=self._one_hot("command"),
            next_command=self._one_hot("next_command"),
            future_waypoints=nav("future_waypoints"),
            future_yaws_rad=nav("future_yaws_rad"),
            route=nav("route"),
            target_speed_mps=self._ego("target_speed_mps"),
            brake=self._ego("brake", np.bool_),
            planning_valid=self._ego("planning_valid", np.bool_),
            perturbated=t(self.perturbated.copy()),
            frame_idx=t(self.frame_idx),
            bucket_idx=t(self.bucket_idx),
            route_id=list(self.route_id),
        )


class BufferPool:
    """Recycles `BatchBuffers` once no consumer holds a tensor of theirs.

    Filling a fresh ~20 MB batch costs page faults and cache misses on every byte; a recycled one is warm.
    A buffer set is refilled only when `unreferenced()`, so a batch the trainer still holds is never
    overwritten; when none is free a new set is made (kept if the pool has room).
    """

    def __init__(self, max_buffers: int = 3) -> None:
        self.max_buffers = max_buffers
        self._buffers: list[BatchBuffers] = []

    def take(self, size: int) -> BatchBuffers:
        """A buffer set for `size` samples whose previous batch nobody references, else a new one."""
        for buffers in self._buffers:
            if buffers.size == size and buffers.unreferenced():
                buffers.reset()
                return buffers
        buffers = BatchBuffers(size)
        if len(self._buffers) < self.max_buffers:
            self._buffers.append(buffers)
        return buffers
