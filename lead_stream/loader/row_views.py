"""Per-row views of a batch's variable-size stored arrays (run-coded rasters, radar points), joined once per
batch: the runs of all rasters become one `RunCoded` each, the radar points go to their sensor blocks."""

from __future__ import annotations

import math

import numpy as np
import torch

from lead_stream.core import runs
from lead_stream.core.batch import RunCoded
from lead_stream.core.constants import MAX_RADAR_POINTS_PER_SENSOR, NUM_RADAR_SENSORS


class RowViews:
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


class RunRows(RowViews):
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

    def fill(
        self, name: str, i: int, values: np.ndarray, short: np.ndarray, shuffled_long: np.ndarray
    ) -> None:
        """Raster `name` of sample i := runs as stored: (n,) uint8 values, (n,) uint8 short lengths (255 =
        long) and the (2, m) uint8 low/high byte planes of the long lengths (`runs.split_lengths`)."""
        self.set(self._first_row[name] + i, (values, short, shuffled_long))

    def copy_sample(self, dst: int, src: int) -> None:
        for k in range(len(self.names)):
            self.copy_row(k * self.size + dst, k * self.size + src)

    def _join(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        rows = [
            row if row is not None else self._empty[self.names[j // self.size]]
            for j, row in enumerate(self.rows)
        ]
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
            problems = {
                int(j): f"runs cover {int(totals[j])} pixels, expected {int(self.pixels[j])}"
                for j in np.flatnonzero(totals != self.pixels).tolist()
            }
        out: dict[int, str] = {}
        for j, problem in problems.items():
            out.setdefault(j % self.size, f"{self.names[j // self.size]}: {problem}")
        return out

    def sample_bounds(self, every: int) -> dict[str, list[int]]:
        """Raster name → offsets into its `coded()` runs where each group of `every` samples starts, and the
        end (how a read's batch splits into its batches: `split_batch`)."""
        _, _, counts, _ = self.joined()
        out = {}
        for k, name in enumerate(self.names):
            ends = np.cumsum(counts[k * self.size : (k + 1) * self.size])
            out[name] = [0, *ends[every - 1 :: every].tolist()]
        return out

    def coded(self) -> dict[str, RunCoded]:
        """Raster name → its `RunCoded` (slices of the joined arrays)."""
        values, lengths, counts, problems = self.joined()
        if problems:
            raise ValueError(f"bad runs in rows {sorted(problems)}: {next(iter(problems.values()))}")
        bounds = np.concatenate([[0], np.cumsum(counts)])[:: self.size].tolist()
        return {
            name: RunCoded(
                torch.from_numpy(values[bounds[k] : bounds[k + 1]]),
                torch.from_numpy(lengths[bounds[k] : bounds[k + 1]]),
                (self.size, *self.shapes[name]),
            )
            for k, name in enumerate(self.names)
        }


class RadarRows(RowViews):
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
                problems.setdefault(
                    i, f"{count} points for sensor {sensor_id} (max {MAX_RADAR_POINTS_PER_SENSOR})"
                )
        return points, key * MAX_RADAR_POINTS_PER_SENSOR + rank, problems

    def problems(self) -> dict[int, str]:
        return self.joined()[2]

    def place(self, out: np.ndarray) -> None:
        """`out` (B, 300, 5) := every good row's points in its sensor's block of 75 rows; padding rows are
        [0, 0, 0, 0, sensor id] as LEAD pads them (`preprocess_radar_input` keeps the block's sensor id)."""
        points, slot, problems = self.joined()
        flat = out.reshape(-1, 5)
        flat[:, :4] = 0.0
        flat[:, 4] = (np.arange(len(flat)) // MAX_RADAR_POINTS_PER_SENSOR) % NUM_RADAR_SENSORS
        if problems:
            keep = ~np.isin(slot // (NUM_RADAR_SENSORS * MAX_RADAR_POINTS_PER_SENSOR), list(problems))
            points, slot = points[keep], slot[keep]
        flat[slot] = points
