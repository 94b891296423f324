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
sizes out of it), so it is checked against the batch layout once (`group_plan`) and a sample costs no
per-array validation beyond the bounds of its variable-size arrays.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch

from lead_stream.cache.features import RUN_CODED
from lead_stream.core.array_filters import ARRAY_ALIGN, StoredArray, unpack_nibbles
from lead_stream.core.batch import Batch, RunCoded
from lead_stream.core.constants import (
    MAX_NUM_BBOXES,
    MAX_RADAR_POINTS_PER_SENSOR,
    NUM_BOX_FIELDS,
    NUM_COMMANDS,
    NUM_RADAR_SENSORS,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.core.container import GroupTable, decode_group_block
from lead_stream.loader.row_views import RadarRows, RunRows
from lead_stream.loader.sample_layout import (
    DENSE_RASTERS,
    EGO_COLUMNS,
    JPEG_NAMES,
    NAV_LAYOUT,
    NAV_SLICES,
    NAV_WIDTH,
    RASTER_SHAPES,
    VARIABLE_ARRAYS,
    VARIANT_GROUPS,
    GroupPlan,
    command_one_hot_array,
    group_plan,
)

_F4 = np.dtype("<f4")
_F2 = np.dtype("<f2")
_U1 = np.dtype("u1")
_U2 = np.dtype("<u2")


@dataclass
class BatchBuffers:
    """Preallocated numpy arrays for B samples; `fill(i, ...)` writes sample i, `to_batch()` wraps them."""

    size: int

    def __post_init__(self) -> None:
        b = self.size
        self.rgb = np.empty((b, RGB_HEIGHT_PX, RGB_WIDTH_PX, 3), np.uint8)
        self._rgb_home: tuple[np.ndarray] | None = None  # own image buffer while `rgb` is outside memory
        for attr, shape in DENSE_RASTERS.values():  # depth, transposed as the shards store it (uint8)
            setattr(self, attr, np.empty((b, *shape[::-1]), np.uint8))
        self.runs = RunRows(b, RASTER_SHAPES)  # views of every sample's runs until to_batch
        self.boxes = np.zeros((b, MAX_NUM_BBOXES, NUM_BOX_FIELDS), np.float32)
        self.num_boxes = np.zeros(b, np.int64)
        self.radar = np.zeros((b, NUM_RADAR_SENSORS * MAX_RADAR_POINTS_PER_SENSOR, 5), np.float32)
        self.radar_rows = RadarRows(b)  # (n, 5) points per row until to_batch places them
        self.nav = np.zeros((b, NAV_WIDTH), np.float32)  # NAV_LAYOUT arrays, flattened back to back
        self.perturbated = np.zeros(b, np.bool_)
        self.frame_idx = np.zeros(b, np.int64)
        self.bucket_idx = np.zeros(b, np.int64)
        self.route_id: list[str] = [""] * b
        self.current_member = ""

    def use_rgb(self, memory: memoryview | None) -> None:
        """Decode the images into `memory` ((B, H, W, 3) uint8 bytes), or into the set's own buffer (None)."""
        if memory is None:
            if self._rgb_home is not None:
                self.rgb, self._rgb_home = self._rgb_home[0], None
            return
        if self._rgb_home is None:
            self._rgb_home = (self.rgb,)  # kept for batches without outside memory
        self.rgb = np.frombuffer(memory, np.uint8).reshape(self._rgb_home[0].shape)

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
        self.current_member = name = JPEG_NAMES[perturbated]
        rgb = simplejpeg.decode_jpeg(members[name], colorspace="RGB", buffer=self.rgb[i])
        if rgb.shape != self.rgb.shape[1:]:
            raise ValueError(f"decodes to {rgb.shape}, expected {self.rgb.shape[1:]}")

    def fill_arrays(self, i: int, members: dict[str, bytes], *, perturbated: bool) -> None:
        """The arrays.lz4 half of `fill`."""
        self.current_member = name = "arrays.lz4"
        raw, base, table = decode_group_block(members[name], VARIANT_GROUPS[perturbated])
        plan = group_plan(table)
        if plan is None:
            self._fill_generic(i, raw, base, table)
        else:
            self._fill_planned(i, raw, base, plan)
        self.perturbated[i] = perturbated

    def _fill_planned(self, i: int, raw: bytes, base: int, plan: GroupPlan) -> None:
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
            nbytes = count * unit
            pos += nbytes + -nbytes % ARRAY_ALIGN  # `aligned`, inline (13 arrays a sample)
        if pos > end:
            raise ValueError("variable-size arrays run past the block end")
        n_boxes, n_radar = dims[0], dims[3]
        if n_boxes > MAX_NUM_BBOXES:
            raise ValueError(f"{n_boxes} boxes (max {MAX_NUM_BBOXES})")
        box_bytes = 4 * NUM_BOX_FIELDS * n_boxes
        self.boxes[i, :n_boxes] = data[starts[0] : starts[0] + box_bytes].view(_F4).reshape(n_boxes, -1)
        self.boxes[i, n_boxes:] = 0.0
        self.num_boxes[i] = n_boxes
        planes = data[starts[3] : starts[3] + 10 * n_radar].reshape(
            2, 5 * n_radar
        )  # transpose+shuffle (n, 5) f2
        self._set_radar(i, np.ascontiguousarray(planes.T).view(_F2).reshape(5, n_radar).T)
        for k, name in enumerate(RUN_CODED):
            j = 4 + 3 * k
            n, n_lengths, n_long = dims[j : j + 3]
            if n != n_lengths:
                raise ValueError(f"{name}: {n} run values but {n_lengths} lengths")
            values, short, long = starts[j], starts[j + 1], starts[j + 2]
            self.runs.fill(
                name,
                i,
                data[values : values + n],
                data[short : short + n],
                data[long : long + 2 * n_long].reshape(2, n_long),
            )

    def _fill_generic(self, i: int, raw: bytes, base: int, table: GroupTable) -> None:
        """Any table layout (other filters or order): restore every array, then place it."""
        arrays = {}
        for name, chain, layouts, count, offset in table.locate(raw, base):
            data = np.frombuffer(raw, layouts[-1][1], count, offset).reshape(layouts[-1][0])
            arrays[name] = StoredArray(data, chain, layouts).restore()
        missing = [
            n
            for n in list(DENSE_RASTERS) + [n for n, _ in NAV_LAYOUT] + list(VARIABLE_ARRAYS)
            if n not in arrays
        ]
        if missing:
            raise ValueError(f"group lacks arrays {missing}")
        for name, (attr, shape) in DENSE_RASTERS.items():
            if arrays[name].shape != shape:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
            getattr(self, attr)[i] = arrays[name].T
        for name, (lo, hi, shape) in NAV_SLICES.items():
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
        for name in ("rgb", "depth_t", "boxes", "num_boxes", "nav", "perturbated", "frame_idx", "bucket_idx"):
            array = getattr(self, name)
            array[dst] = array[src]
        self.runs.copy_sample(dst, src)
        self.radar_rows.copy_row(dst, src)
        self.route_id[dst] = self.route_id[src]

    def _nav(self, name: str) -> torch.Tensor:
        lo, hi, shape = NAV_SLICES[name]
        return torch.from_numpy(np.ascontiguousarray(self.nav[:, lo:hi]).reshape(self.size, *shape))

    def _one_hot(self, field: str) -> torch.Tensor:
        index = command_one_hot_array(self.nav[:, EGO_COLUMNS[field]].astype(np.int64))
        out = np.zeros((self.size, NUM_COMMANDS), np.float32)
        out[np.arange(self.size), index] = 1.0
        return torch.from_numpy(out)

    def _ego(self, field: str, dtype: type = np.float32) -> torch.Tensor:
        column = self.nav[:, EGO_COLUMNS[field]]
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


def split_batch(batch: Batch, size: int, run_bounds: Mapping[str, Sequence[int]]) -> list[Batch]:
    """A read's `Batch` of k·size rows → its k batches of `size` rows, in order; every tensor is a view.

    Args:
        batch: rows of k consecutive batches, back to back (`BatchBuffers.to_batch` of a read, or a worker's
            read as `PackedBatch.unpack` gives it).
        size: rows per batch (the per-rank batch).
        run_bounds: run-coded field → the k + 1 offsets of each batch's runs (`RunRows.sample_bounds`).
    """
    total = batch.size
    if total == size:
        return [batch]
    if total % size:
        raise ValueError(f"a read of {total} rows does not split into batches of {size}")
    count = total // size
    parts: list[dict[str, object]] = [{} for _ in range(count)]
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, RunCoded):
            bounds, shape = run_bounds[f.name], (size, *value.shape[1:])
            for j, part in enumerate(parts):
                lo, hi = bounds[j], bounds[j + 1]
                part[f.name] = RunCoded(value.values[lo:hi], value.lengths[lo:hi], shape)
        elif isinstance(value, torch.Tensor):
            for j, part in enumerate(parts):
                part[f.name] = value[j * size : (j + 1) * size]
        else:
            for j, part in enumerate(parts):
                part[f.name] = list(value[j * size : (j + 1) * size])
    return [Batch(**part) for part in parts]


class BufferPool:
    """Recycles `BatchBuffers` once no consumer holds a tensor of theirs.

    Filling a fresh ~20 MB batch costs page faults and cache misses on every byte; a recycled one is warm.
    A buffer set is refilled only when `unreferenced()`, so a batch the trainer still holds is never
    overwritten; when none is free a new set is made (kept if the pool has room).
    """

    def __init__(self, max_buffers: int = 3) -> None:
        self.max_buffers = max_buffers
        self._buffers: list[BatchBuffers] = []

    def take(self, size: int, rgb: memoryview | None = None) -> BatchBuffers:
        """A buffer set for `size` samples whose previous batch nobody references, else a new one.

        `rgb`: memory for the (size, H, W, 3) uint8 images (a worker's shared arena, so the JPEGs decode
        straight into the block the trainer receives); None keeps the set's own image buffer.
        """
        for buffers in self._buffers:
            if buffers.size == size and buffers.unreferenced():
                buffers.reset()
                break
        else:
            buffers = BatchBuffers(size)
            if len(self._buffers) < self.max_buffers:
                self._buffers.append(buffers)
        buffers.use_rgb(rgb)
        return buffers
