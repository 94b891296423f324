"""The fast preprocessing paths equal the straightforward ones bit for bit (geometry, labels, targets,
readers).

Each fast path is compared with a reference: the per-item loop it replaced (kept here), or the library reader
(np.load, laspy, Pillow) it falls back to. Readers must also return None, never a different array, for
layouts or damage they do not handle.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from lead_stream import sources
from lead_stream.cache import labels as L
from lead_stream.cache import targets as T
from lead_stream.core import geometry as G
from lead_stream.core import layout
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    HDMAP_TO_BEV_SEMANTIC,
    LIDAR_HIST_MAX_COUNT,
    MAX_X_M,
    MAX_Y_M,
    MAX_Z_M,
    MIN_X_M,
    MIN_Y_M,
    MIN_Z_M,
    PIXELS_PER_M,
)
from lead_stream.sources import laz as laz_reader
from lead_stream.sources import npz as npz_reader
from lead_stream.sources import png as png_reader


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------
def _fill_polygons_reference(shape: tuple[int, int], polygons: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """The per-polygon rasteriser `fill_polygons` replaced."""
    image = np.zeros(shape, dtype=np.uint8)
    for vertices, label in polygons:
        vertices = np.asarray(vertices, dtype=np.float64)
        c0 = max(int(np.floor(vertices[:, 0].min() - 0.5)), 0)
        c1 = min(int(np.ceil(vertices[:, 0].max() + 0.5)), shape[1])
        r0 = max(int(np.floor(vertices[:, 1].min() - 0.5)), 0)
        r1 = min(int(np.ceil(vertices[:, 1].max() + 0.5)), shape[0])
        if c0 >= c1 or r0 >= r1:
            continue
        cols = np.arange(c0, c1) + 0.5
        rows = np.arange(r0, r1)[:, None] + 0.5
        edges = np.roll(vertices, -1, axis=0) - vertices
        stack = np.stack(
            [ex * (rows - vy) - ey * (cols - vx) for (vx, vy), (ex, ey) in zip(vertices, edges, strict=True)]
        )
        inside = (stack >= -1e-9).all(axis=0) | (stack <= 1e-9).all(axis=0)
        image[r0:r1, c0:c1][inside] = label
    return image


def _random_polygon(rng: np.random.Generator, num_vertices: int) -> np.ndarray:
    center = rng.uniform(-20, 400, 2)
    if rng.random() < 0.3:  # vertices on pixel centres / edges
        center = np.round(center) + rng.choice([0.0, 0.5])
    angles = np.sort(rng.uniform(0, 2 * np.pi, num_vertices))
    radius = rng.uniform(0.2, 30)
    return center + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_fill_polygons_equals_per_polygon_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        mixed = list(rng.integers(3, 7, rng.integers(1, 10)))
        counts = [4] * rng.integers(0, 12) if rng.random() < 0.6 else mixed
        polygons = [(_random_polygon(rng, int(k)), int(rng.integers(1, 10))) for k in counts]
        shape = (BEV_HEIGHT_PX, BEV_WIDTH_PX) if rng.random() < 0.7 else (int(rng.integers(1, 50)), 37)
        assert _same(G.fill_polygons(shape, polygons), _fill_polygons_reference(shape, polygons))


def test_fill_polygons_axis_aligned_rectangles_and_bad_vertices() -> None:
    square = np.array([[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]])
    out = G.fill_polygons((32, 32), [(square, 3), (square + 5, 7)])
    assert _same(out, _fill_polygons_reference((32, 32), [(square, 3), (square + 5, 7)]))
    assert out[12, 12] == 3 and out[17, 17] == 7 and out[24, 24] == 7 and out[25, 25] == 0 and out[9, 9] == 0
    with pytest.raises(ValueError):
        G.fill_polygons((32, 32), [(np.array([[np.nan, 1.0], [2.0, 2.0], [3.0, 1.0]]), 1)])
    with pytest.raises(OverflowError):
        G.fill_polygons((32, 32), [(np.array([[np.inf, 1.0], [2.0, 2.0], [3.0, 1.0]]), 1)])
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        G.fill_polygons((32, 32), [(np.zeros((4, 3)), 1)])


def test_point_rows_and_box_corners_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(1, 30))
        points = rng.normal(0, 30, (n, 2)).astype(np.float32 if trial % 2 else np.float64)
        t, r = (0.0, 0.0) if trial % 5 == 0 else (float(rng.normal()), float(rng.normal(0, 20)))
        rows = G.perturb_point_rows(points, t, r)
        single = np.stack([G.perturb_points(np.array([p], dtype=np.float64), t, r)[0] for p in points])
        assert _same(rows, single)
        half = np.abs(rng.normal(2, 1, (n, 2)))
        yaws = [float(y) for y in rng.uniform(-7, 7, n)]
        corners = G.box_corners_many(rows, half, yaws)
        assert _same(corners, np.stack([G.box_corners(rows[i], tuple(half[i]), yaws[i]) for i in range(n)]))


def _rasterize_reference(points: np.ndarray) -> np.ndarray:
    x, y, z = (points[:, i].astype(np.float64) for i in range(3))
    keep = (z >= MIN_Z_M) & (z <= MAX_Z_M) & (x >= MIN_X_M) & (x <= MAX_X_M) & (y >= MIN_Y_M) & (y <= MAX_Y_M)
    cols = np.minimum(np.floor((x[keep] - MIN_X_M) * PIXELS_PER_M).astype(np.int64), BEV_WIDTH_PX - 1)
    rows = np.minimum(np.floor((y[keep] - MIN_Y_M) * PIXELS_PER_M).astype(np.int64), BEV_HEIGHT_PX - 1)
    counts = np.bincount(rows * BEV_WIDTH_PX + cols, minlength=BEV_HEIGHT_PX * BEV_WIDTH_PX)
    return np.minimum(counts, LIDAR_HIST_MAX_COUNT).astype(np.uint8).reshape(BEV_HEIGHT_PX, BEV_WIDTH_PX)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rasterize_lidar_equals_histogram_reference(dtype: type) -> None:
    rng = np.random.default_rng(1)
    points = np.concatenate(
        [
            rng.uniform([-40, -50, -6], [70, 50, 12], (20000, 3)),
            np.array(
                [
                    [MIN_X_M, MIN_Y_M, 0],
                    [MAX_X_M, MAX_Y_M, 0],
                    [0, 0, MIN_Z_M],
                    [0, 0, MAX_Z_M],
                    [np.nan, 0, 0],
                    [1, 1, 1],
                ]
                * 3
            ),
            np.full((300, 3), 2.0),
        ]
    ).astype(dtype)
    assert _same(G.rasterize_lidar(points), _rasterize_reference(points))
    assert _same(G.rasterize_lidar(points[:0]), _rasterize_reference(points[:0]))


# ---------------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------------
def test_hdmap_to_bev_and_merge_equal_plain_numpy() -> None:
    rng = np.random.default_rng(2)
    lut = np.array(HDMAP_TO_BEV_SEMANTIC, dtype=np.uint8)
    for dtype in (np.uint8, np.int64, np.uint16):
        hdmap = rng.integers(0, 9, (256, 256)).astype(dtype)
        expected = np.repeat(np.repeat(lut[hdmap[48:208, 64:256]], 2, axis=0), 2, axis=1)
        got = L.hdmap_to_bev(hdmap)
        assert _same(got, expected) and got.flags.c_contiguous
    occupancy = rng.integers(0, 10, (320, 384)).astype(np.uint8) * (rng.random((320, 384)) < 0.2)
    hdmap_bev = rng.integers(0, 4, (320, 384)).astype(np.uint8)
    for hd, occ in ((hdmap_bev, occupancy.astype(np.uint8)), (hdmap_bev.astype(np.int32), occupancy)):
        expected = np.where(occ == 0, hd, occ + L.OCCUPANCY_TO_BEV_OFFSET).astype(np.uint8)
        assert _same(L.merge_bev_semantic(hd, occ), expected)


def test_box_labels_fall_back_box_by_box_for_odd_positions() -> None:
    meta = {"perturbation_translation": 0.5, "perturbation_rotation": 3.0}
    car = {
        "class": "car",
        "position": [5.0, 1.0, 0.0],
        "extent": [2.0, 1.0, 1.0],
        "yaw": 0.1,
        "speed": 3.0,
        "brake": 0.0,
        "id": 7,
    }
    ego = {"class": "ego_car", "extent": [2.0, 1.0, 1.0]}  # no position: only the fallback reads per box
    for translation, rotation in ((0.0, 0.0), (0.5, 3.0)):
        with_ego = L.box_labels([ego, car], meta, translation_m=translation, rotation_deg=rotation)
        alone = L.box_labels([car], meta, translation_m=translation, rotation_deg=rotation)
        assert _same(with_ego, alone) and len(alone) == 1


# ---------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------
def test_first_occurrences_and_allclose_equal_numpy() -> None:
    rng = np.random.default_rng(3)
    values = [0.0, -0.0, 1.0, 1.0 + 1e-9, 1.0 + 2e-5, np.nan, np.inf, -np.inf, 1e-9, 2e-8, 1e300, 5e-324]
    for _ in range(2000):
        a, b = np.array(rng.choice(values, 2)), np.array(rng.choice(values, 2))
        if rng.random() < 0.5:
            b = a + rng.normal(0, 1e-6, 2) * rng.choice([0.0, 1.0, 1e3])
        assert T._allclose_xy(a, b) == bool(np.allclose(a, b))
    for _ in range(500):
        size = (int(rng.integers(0, 12)), 2)
        points = np.array(rng.choice(values[:6] + [2.0, 3.0], size), dtype=np.float64).reshape(-1, 2)
        _, first = np.unique(points, axis=0, return_index=True)
        assert T._first_occurrences(points) == sorted(first.tolist())


# ---------------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------------
def _laz(
    *,
    n: int = 3000,
    time_type: type = np.uint8,
    scaled: bool = False,
    point_format: int = 0,
    version: str = "1.2",
    extra: str | None = None,
    compress: bool = True,
) -> bytes:
    import laspy

    rng = np.random.default_rng(n)
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.offsets, header.scales = [-30.0, -20.0, -2.0], [0.01, 0.1, 0.001]
    if extra:
        header.add_extra_dim(laspy.ExtraBytesParams(name=extra, type=np.int16))
    header.add_extra_dim(
        laspy.ExtraBytesParams(
            name="time",
            type=time_type,
            scales=np.array([0.5]) if scaled else None,
            offsets=np.array([1.0]) if scaled else None,
        )
    )
    las = laspy.LasData(header)
    las.x, las.y, las.z = rng.uniform(-30, 60, n), rng.uniform(-20, 40, n), rng.uniform(-2, 5, n)
    las["time"] = rng.integers(0, 50, n) * 0.5 + 1.0 if scaled else rng.uniform(0, 100, n).astype(time_type)
    buffer = io.BytesIO()
    las.write(buffer, do_compress=compress)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "fast"),
    [
        ({}, True),
        ({"time_type": np.float32}, True),
        ({"time_type": np.float64}, True),
        ({"n": 0}, True),
        ({"n": 120_000}, True),
        ({"point_format": 3}, True),
        ({"point_format": 1, "extra": "foo"}, True),
        ({"scaled": True}, False),
        ({"version": "1.4", "point_format": 6}, False),
        ({"compress": False}, False),
    ],
)
def test_decode_laz_equals_laspy_or_declines(kwargs: dict, fast: bool) -> None:
    payload = _laz(**kwargs)
    reference = laz_reader.read_laz_with_laspy(Path("x.laz"), payload)
    points = laz_reader.decode_laz(payload)
    assert (points is not None) == fast
    if points is not None:
        assert _same(points, reference)


def test_decode_laz_declines_damaged_files() -> None:
    payload = _laz()
    rng = np.random.default_rng(4)
    for trial in range(120):
        damaged = bytearray(payload)
        if trial % 3 == 0:
            damaged = damaged[: rng.integers(0, len(damaged))]
        else:  # header / VLRs, or the chunk table at the end
            where = rng.integers(0, 600) if trial % 3 == 1 else len(damaged) - rng.integers(1, 16)
            damaged[where] ^= 1 << int(rng.integers(0, 8))
        points = laz_reader.decode_laz(bytes(damaged))
        if points is not None:
            assert _same(points, laz_reader.read_laz_with_laspy(Path("x.laz"), bytes(damaged)))


def _npz(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("compressed", [False, True])
def test_read_npz_arrays_equals_np_load(compressed: bool) -> None:
    rng = np.random.default_rng(5)
    keys = npz_reader.RADAR_KEYS
    cases = [
        {k: rng.normal(size=(int(rng.integers(0, 20)), 4)).astype(np.float16) for k in keys},
        {k: np.asfortranarray(rng.normal(size=(6, 4)).astype(np.float32)) for k in keys},
        {k: rng.normal(size=(3, 4)).astype(">f4") for k in keys},
        {k: np.arange(8, dtype=np.int64).reshape(2, 4) for k in keys},
    ]
    for arrays in cases:
        payload = _npz(arrays, compressed)
        got = npz_reader.read_npz_arrays(payload, keys)
        assert got is not None
        with np.load(io.BytesIO(payload)) as npz:
            for key in keys:
                expected = npz[key]
                assert _same(got[key], expected) and got[key].flags.writeable
                assert got[key].flags.f_contiguous == expected.flags.f_contiguous
    assert npz_reader.read_npz_arrays(_npz({k: np.zeros((1, 4)) for k in keys[:3]}, compressed), keys) is None
    objects = {k: np.array([[None] * 4], dtype=object) for k in keys}
    buffer = io.BytesIO()
    np.savez(buffer, **objects)
    assert npz_reader.read_npz_arrays(buffer.getvalue(), keys) is None
    payload = _npz(cases[0], compressed)
    for cut in range(0, len(payload), 37):
        assert npz_reader.read_npz_arrays(payload[:cut], keys) is None


def _png(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def test_decode_grey_png_equals_pillow_or_declines() -> None:
    rng = np.random.default_rng(6)
    grey = rng.integers(0, 10, (40, 70)).astype(np.uint8)
    for array, kwargs in (
        (grey, {}),
        (grey, {"compress_level": 0}),
        (grey, {"compress_level": 9}),
        (grey[:1, :1], {}),
        (rng.integers(0, 256, (3, 5000)).astype(np.uint8), {}),
    ):
        payload = _png(array, **kwargs)
        got = png_reader.decode_grey_png(payload)
        assert got is not None and got.flags.writeable
        assert _same(got, np.array(Image.open(io.BytesIO(payload))))
    text = PngImagePlugin.PngInfo()
    text.add_text("k", "v")
    assert png_reader.decode_grey_png(_png(grey, pnginfo=text)) is None
    assert png_reader.decode_grey_png(_png(grey.astype(np.uint16) * 300)) is None
    assert png_reader.decode_grey_png(_png(np.stack([grey] * 3, axis=-1))) is None
    payload = bytearray(_png(grey))
    payload[28] = 1  # IHDR interlace flag, CRC fixed up: left to Pillow
    payload[29:33] = struct.pack(">I", zlib.crc32(bytes(payload[12:29])))
    assert png_reader.decode_grey_png(bytes(payload)) is None
    payload = _png(grey)
    for cut in range(0, len(payload), 29):
        assert png_reader.decode_grey_png(payload[:cut]) is None
    for where in range(8, len(payload), 11):
        damaged = bytearray(payload)
        damaged[where] ^= 0x10
        assert png_reader.decode_grey_png(bytes(damaged)) is None  # every chunk is CRC-checked


def test_route_file_paths_equal_layout(lead_root: Path) -> None:
    route = sources.Route(lead_root, sources.discover_routes(lead_root)[0])
    for modality, perturbated in (("rgb", True), ("lidar", False), ("metas", False), ("hdmap", True)):
        for frame_idx in (0, 7, 1234):
            assert route._file(modality, frame_idx, perturbated) == layout.modality_path(
                route.path, modality, frame_idx, perturbated=perturbated
            )
    with pytest.raises(KeyError):
        route._file("lidar", 0, True)


def test_decoders_handle_every_synthetic_file(lead_root: Path) -> None:
    """The synthetic tree (LEAD's layouts) goes through the fast paths, equal to the library readers."""
    route = sources.Route(lead_root, sources.discover_routes(lead_root)[0])
    for frame_idx in range(3):
        laz = layout.modality_path(route.path, "lidar", frame_idx).read_bytes()
        points = laz_reader.decode_laz(laz)
        assert points is not None and _same(points, laz_reader.read_laz_with_laspy(Path("x"), laz))
        for perturbated in (False, True):
            npz = layout.modality_path(route.path, "radar", frame_idx, perturbated=perturbated).read_bytes()
            radar = npz_reader.read_npz_arrays(npz, npz_reader.RADAR_KEYS)
            assert radar is not None
            reference = npz_reader.read_radar_with_numpy(Path("x"), npz)
            assert all(_same(radar[k], reference[k]) for k in npz_reader.RADAR_KEYS)
            for modality in ("semantics", "depth", "hdmap"):
                path = layout.modality_path(route.path, modality, frame_idx, perturbated=perturbated)
                png = path.read_bytes()
                array = png_reader.decode_grey_png(png)
                assert array is not None and _same(array, np.array(Image.open(io.BytesIO(png))))
    assert math.isfinite(float(points[:, :3].sum()))
