"""One raw LEAD route (an extracted folder or a zip read in place) → its files as Python objects (dicts,
numpy arrays, JPEG bytes), unchanged.

Reads LEAD's own files (LEAD_FORMAT §1) through the route's `stores.RouteStore`: `results.json`, lzma
pickles in `metas/` and `bboxes/`, JPEG, PNG, LAZ and NPZ sensor files, normal and `*_perturbated`. Nothing
is written. Every file that cannot be read raises `LeadFormatError(path, problem)` (a zip member is named
`<zip>/<member>`); the frame count is the number of files in `bboxes/` (LEAD's definition). LEAD's own layouts of the sensor files go through the small readers of `laz`, `npz` and
`png`, which fall back to laspy / np.load / Pillow for anything they do not fully check.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from lead_stream.core import layout
from lead_stream.core.constants import (
    DEPTH16_MAX_M,
    DEPTH_MAX_M,
    HDMAP_SIZE_PX,
    NUM_SEMANTIC_CLASSES,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.core.errors import LeadFormatError
from lead_stream.sources.discovery import discover_sources, results_problem, route_usability
from lead_stream.sources.laz import decode_laz, read_laz_with_laspy
from lead_stream.sources.npz import RADAR_KEYS, read_npz_arrays, read_radar_with_numpy
from lead_stream.sources.pickles import loads_lzma_pickle
from lead_stream.sources.png import decode_grey_png, pixels
from lead_stream.sources.stores import FolderStore, RouteStore, open_store, record_location

NUM_HDMAP_CLASSES = 9  # ChauffeurNet ids 0..8
JPEG_SOI = b"\xff\xd8"
_TMP_SUFFIX = ".tmp"  # unfinished files of an atomic writer; never counted as frames
_LABEL_DIRS = ("metas", "bboxes")  # copies of a route are compared byte for byte here (and results.json)


class Route:
    """Read access to one LEAD route `"<Scenario>/<route_dir>"`, through its `RouteStore`.

    Args:
        data_root: LEAD's `carla_root` (holds `data/`, and/or zips anywhere below it).
        route_id: `"<Scenario>/<route_dir>"`.
        source: the recorded locator of the copy to read (routes.parquet `source`); None: the extracted
            folder `<data_root>/data/<route_id>/` if it exists, else the route's zip below the data root.
        store: an already opened store (wins over `source`).

    Raises:
        LeadFormatError: the route exists nowhere, or its zip is unreadable.
    """

    def __init__(
        self,
        data_root: Path | str,
        route_id: str,
        *,
        source: str | None = None,
        store: RouteStore | None = None,
    ) -> None:
        self.data_root = Path(data_root)
        self.route_id = route_id
        self.scenario = route_id.split("/")[0]
        if store is None:
            store = (
                open_store(data_root, source) if source is not None else _default_store(data_root, route_id)
            )
        self.store = store
        self.path = store.root
        self._files: dict[tuple[str, bool], str] = {}

    def __repr__(self) -> str:
        return f"Route({str(self.data_root)!r}, {self.route_id!r}, source={self.store.locator!r})"

    # --- per-route files ------------------------------------------------------------------------
    def results(self) -> dict | None:
        """Parsed results.json (RouteRecord), or None if the route has none (unfinished).

        Raises:
            LeadFormatError: invalid JSON, or a structure without the keys LEAD's route filter reads.
        """
        if not self.store.is_file(layout.RESULTS_FILENAME):
            return None
        path = self.store.path_of(layout.RESULTS_FILENAME)
        text = self.store.read(layout.RESULTS_FILENAME)
        try:
            results = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LeadFormatError(path, f"bad JSON ({exc})") from None
        problem = results_problem(results)
        if problem is not None:
            raise LeadFormatError(path, problem)
        return results

    def frames_present(self, modality: str) -> list[str]:
        """File names in the route's `modality` folder (e.g. "metas", "rgb_perturbated"), unfinished ones
        left out; empty if the folder does not exist."""
        return [n for n in self.store.names(modality) if not n.endswith(_TMP_SUFFIX)]

    def num_frames(self) -> int:
        """Number of files in bboxes/ (LEAD's frame count); 0 if there is no bboxes/ folder."""
        return len(self.frames_present("bboxes"))

    def has_meta0(self) -> bool:
        """Whether metas/0000.pkl exists (LEAD requires it)."""
        return self.store.is_file(self._rel("metas", 0))

    def modalities(self) -> dict[str, bool]:
        """Which modality folders exist, e.g. {"rgb": True, "rgb_perturbated": True, "lidar": True, ...}."""
        return {name: self.store.is_dir(name) for name in layout.all_modality_dirnames()}

    def usability(self) -> tuple[bool, str | None]:
        """`route_usability(self.results(), self.has_meta0())`."""
        return route_usability(self.results(), self.has_meta0())

    def fingerprint(self) -> str:
        """The store's content stamp: for a folder a cheap stat-based hash (name, size and mtime_ns of
        results.json and of every file in metas/ and bboxes/, the mtime_ns of each sensor folder, ~1 ms for
        100 frames); for a zip the hash of its central-directory entries (name, size, CRC-32)."""
        return self.store.fingerprint(self.route_id)

    def stat_stamp(self) -> str:
        """The store's cheaper change stamp (what the index compares before re-reading a route)."""
        return self.store.stat_stamp()

    # --- per-frame files ------------------------------------------------------------------------
    def _rel(self, modality: str, frame_idx: int, perturbated: bool = False) -> str:
        """`<modality>[_perturbated]/NNNN.<ext>` of this route (the folder part built once per modality)."""
        key = (modality, perturbated)
        folder = self._files.get(key)
        if folder is None:
            name = modality + layout.PERTURBATED_SUFFIX if perturbated else modality
            layout.modality_dir("", modality, perturbated=perturbated)  # KeyError for unknown modalities
            folder = self._files[key] = f"{name}/"
        return folder + layout.frame_filename(modality, frame_idx)

    def _file(self, modality: str, frame_idx: int, perturbated: bool = False) -> Path | str:
        """How messages name one frame file of this route."""
        return self.store.path_of(self._rel(modality, frame_idx, perturbated))

    def file_bytes(self, modality: str, frame_idx: int, *, perturbated: bool = False) -> bytes:
        """The raw bytes of one frame file (e.g. `file_bytes("metas", 3)`)."""
        return self.store.read(self._rel(modality, frame_idx, perturbated))

    def meta(self, frame_idx: int) -> dict:
        """metas/NNNN.pkl: LEAD's measurement dict (~350 keys; float-suffixed keys are strings)."""
        path = self._file("metas", frame_idx)
        meta = loads_lzma_pickle(self.file_bytes("metas", frame_idx), path)
        if not isinstance(meta, dict):
            raise LeadFormatError(path, f"expected a dict of measurements, found {type(meta).__name__}")
        return meta

    def boxes(self, frame_idx: int) -> list[dict]:
        """bboxes/NNNN.pkl: list of box dicts sorted by distance, first = ego_car (LEAD_FORMAT §1.8)."""
        path = self._file("bboxes", frame_idx)
        boxes = loads_lzma_pickle(self.file_bytes("bboxes", frame_idx), path)
        if not isinstance(boxes, list) or not all(isinstance(b, dict) for b in boxes):
            raise LeadFormatError(path, f"expected a list of box dicts, found {type(boxes).__name__}")
        return boxes

    def rgb_jpeg(self, frame_idx: int, *, perturbated: bool = False) -> bytes:
        """Original JPEG bytes of rgb[_perturbated]/NNNN.jpg (only the SOI marker is checked)."""
        path = self._file("rgb", frame_idx, perturbated)
        payload = self.file_bytes("rgb", frame_idx, perturbated=perturbated)
        if not payload.startswith(JPEG_SOI):
            found = payload[:2].hex(" ")
            raise LeadFormatError(path, f"corrupt JPEG: expected SOI marker ff d8, found {found!r}")
        return payload

    def rgb(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(384, 1152, 3) uint8 RGB image (three 384 x 384 cameras, left | front | right)."""
        import simplejpeg

        path = self._file("rgb", frame_idx, perturbated)
        payload = self.rgb_jpeg(frame_idx, perturbated=perturbated)
        try:
            image = simplejpeg.decode_jpeg(payload, colorspace="RGB", strict=True)
        except ValueError as exc:
            raise LeadFormatError(path, f"corrupt JPEG ({exc})") from None
        check_shape(path, image, (RGB_HEIGHT_PX, RGB_WIDTH_PX, 3))
        return image

    def _png(self, modality: str, frame_idx: int, perturbated: bool) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self._file(modality, frame_idx, perturbated)
        payload = self.file_bytes(modality, frame_idx, perturbated=perturbated)
        array = decode_grey_png(payload)
        if array is not None:
            return array
        try:
            with Image.open(io.BytesIO(payload)) as image:
                image.load()
                mode = image.mode
                array = pixels(image)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise LeadFormatError(path, f"corrupt PNG ({exc})") from None
        if mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535:
            array = array.astype(np.uint16)  # some Pillow versions open 16-bit grey PNGs as int32 "I"
        if array.ndim != 2:
            problem = f"expected a single-channel PNG, found mode {mode} shape {array.shape}"
            raise LeadFormatError(path, problem)
        return array

    def semantics(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(384, 1152) uint8 TransFuser semantic classes 0..9."""
        return self._label_png(
            "semantics",
            frame_idx,
            perturbated,
            (RGB_HEIGHT_PX, RGB_WIDTH_PX),
            NUM_SEMANTIC_CLASSES,
            "semantic class",
        )

    def _label_png(
        self,
        modality: str,
        frame_idx: int,
        perturbated: bool,
        shape: tuple[int, int],
        num_classes: int,
        what: str,
    ) -> np.ndarray:
        """A uint8 label PNG of `shape` whose values are below `num_classes` (else LeadFormatError)."""
        path = self._file(modality, frame_idx, perturbated)
        array = self._png(modality, frame_idx, perturbated)
        check_shape(path, array, shape, np.uint8)
        if array.max(initial=0) >= num_classes:
            raise LeadFormatError(path, f"{what} {int(array.max())} out of range 0..{num_classes - 1}")
        return array

    def depth_m(self, frame_idx: int, *, perturbated: bool = False, resolution_ratio: int = 4) -> np.ndarray:
        """(384 / r, 1152 / r) float32 depth in metres, r = `resolution_ratio` (LEAD's
        `save_depth_resolution_ratio`; 4 → 96 x 288). LEAD's `decode_depth` in float32, in its order:
        uint8 PNG (v / 255) * 50, uint16 PNG (v / 65535) * 96."""
        path = self._file("depth", frame_idx, perturbated)
        array = self._png("depth", frame_idx, perturbated)
        if resolution_ratio < 1 or RGB_HEIGHT_PX % resolution_ratio or RGB_WIDTH_PX % resolution_ratio:
            raise LeadFormatError(
                path, f"depth resolution ratio {resolution_ratio} does not divide 384 x 1152"
            )
        check_shape(path, array, (RGB_HEIGHT_PX // resolution_ratio, RGB_WIDTH_PX // resolution_ratio))
        if array.dtype not in (np.uint8, np.uint16):
            raise LeadFormatError(path, f"expected a uint8 or uint16 depth PNG, found {array.dtype}")
        return decode_depth_png(array)

    def hdmap(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(256, 256) uint8 ChauffeurNet ids 0..8 (2 px/m, ego at (128, 128), rows = +y, cols = +x)."""
        return self._label_png(
            "hdmap", frame_idx, perturbated, (HDMAP_SIZE_PX, HDMAP_SIZE_PX), NUM_HDMAP_CLASSES, "hdmap id"
        )

    def lidar(self, frame_idx: int) -> np.ndarray:
        """(N, 4) float64 `[x, y, z, time]` accumulated point cloud in the ego frame (laspy's `xyz` values).

        LEAD's plain layout (LAS <= 1.3, LAZ, unscaled extra dimension `time`) is decoded by `decode_laz`;
        anything else, and any file that fast path cannot decode, goes through `laspy.read`.
        """
        path = self._file("lidar", frame_idx)
        payload = self.file_bytes("lidar", frame_idx)
        points = decode_laz(payload)
        return points if points is not None else read_laz_with_laspy(path, payload)

    def radar(self, frame_idx: int, *, perturbated: bool = False) -> dict[str, np.ndarray]:
        """radar[_perturbated]/NNNN.npz: {"radar1".."radar4": (n, 4) float16 [x, y, z, v]}."""
        path = self._file("radar", frame_idx, perturbated)
        payload = self.file_bytes("radar", frame_idx, perturbated=perturbated)
        radar = read_npz_arrays(payload, RADAR_KEYS)
        if radar is None:
            radar = read_radar_with_numpy(path, payload)
        for key, array in radar.items():
            if array.ndim != 2 or array.shape[1] != 4:
                raise LeadFormatError(path, f"{key}: expected shape (n, 4), found {array.shape}")
        return radar


def open_route(data_root: Path | str, route_id: str, sources: tuple[str, ...] | list[str]) -> Route:
    """The route read from the first of its copies `sources` (locators), after checking that every other
    copy holds the same files with the same sizes and the same labels (results.json, metas and bboxes, byte
    for byte: the files the index reads anyway), so an extracted folder and its zip are one route.

    Raises:
        LeadFormatError: a copy is unreadable (e.g. a truncated zip), or two copies differ (names both).
    """
    stores = [open_store(data_root, locator) for locator in sources]
    first = stores[0]
    if len(stores) > 1:
        expected = first.sizes()
        for other in stores[1:]:
            found = other.sizes()
            problem = (
                _difference(expected, found)
                if found != expected
                else _label_difference(first, other, expected)
            )
            if problem:
                raise LeadFormatError(other.root, f"differs from the copy at {first.root}: {problem}")
    return Route(data_root, route_id, store=first)


def _difference(expected: dict[str, int], found: dict[str, int]) -> str:
    """The first difference between two {file: size} listings, in words."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        return f"{len(missing)} file(s) missing here, e.g. {missing[0]}"
    if extra:
        return f"{len(extra)} file(s) only here, e.g. {extra[0]}"
    rel = next(r for r in sorted(expected) if expected[r] != found[r])
    return f"{rel} has {found[rel]:,} bytes here, {expected[rel]:,} there"


def _label_difference(first: RouteStore, other: RouteStore, files: dict[str, int]) -> str | None:
    """The first label file of `files` (results.json, metas/, bboxes/) whose bytes differ between two copies."""
    for rel in sorted(files):
        if rel != layout.RESULTS_FILENAME and rel.split("/")[0] not in _LABEL_DIRS:
            continue
        if first.read(rel) != other.read(rel):
            return f"{rel} has other bytes here (same size)"
    return None


def _default_store(data_root: Path | str, route_id: str) -> RouteStore:
    """The extracted folder of `route_id`, else its first zip below the data root."""
    folder = layout.route_path(data_root, route_id)
    if folder.is_dir():
        return FolderStore(folder, record_location(data_root, folder))
    locators = discover_sources(data_root).get(route_id) if Path(data_root).is_dir() else None
    if not locators:
        raise LeadFormatError(folder, "missing folder: route directory does not exist (and no zip holds it)")
    return open_store(data_root, locators[0])


def decode_depth_png(array: np.ndarray) -> np.ndarray:
    """LEAD's `decode_depth`: uint8 (v / 255) * 50, uint16 (v / 65535) * 96, in float32 and in that order."""
    if array.dtype == np.uint8:
        return (array.astype(np.float32) / np.float32(255)) * np.float32(DEPTH_MAX_M)
    return (array.astype(np.float32) / np.float32(65535)) * np.float32(DEPTH16_MAX_M)


def check_shape(path: Path | str, array: np.ndarray, shape: tuple[int, ...], dtype: Any = None) -> None:
    if array.shape != shape:
        raise LeadFormatError(path, f"expected shape {shape}, found {array.shape}")
    if dtype is not None and array.dtype != dtype:
        raise LeadFormatError(path, f"expected dtype {np.dtype(dtype)}, found {array.dtype}")
