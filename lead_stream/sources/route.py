"""One raw LEAD route directory → its files as Python objects (dicts, numpy arrays, JPEG bytes), unchanged.

Reads LEAD's own files (LEAD_FORMAT §1): `results.json`, lzma pickles in `metas/` and `bboxes/`, JPEG,
PNG, LAZ and NPZ sensor files, normal and `*_perturbated`. Nothing is written. Every file that cannot be
read raises `LeadFormatError(path, problem)`; the frame count is the number of files in `bboxes/` (LEAD's
definition). LEAD's own layouts of the sensor files go through the small readers of `laz`, `npz` and
`png`, which fall back to laspy / np.load / Pillow for anything they do not fully check.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lead_stream.core import layout
from lead_stream.core.constants import (
    DEPTH16_MAX_M,
    DEPTH_HEIGHT_PX,
    DEPTH_MAX_M,
    DEPTH_WIDTH_PX,
    HDMAP_SIZE_PX,
    NUM_SEMANTIC_CLASSES,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.core.errors import LeadFormatError
from lead_stream.sources.discovery import results_problem, route_usability
from lead_stream.sources.laz import decode_laz, read_laz_with_laspy
from lead_stream.sources.npz import RADAR_KEYS, read_npz_arrays, read_radar_with_numpy
from lead_stream.sources.pickles import read_lzma_pickle
from lead_stream.sources.png import decode_grey_png, pixels

NUM_HDMAP_CLASSES = 9  # ChauffeurNet ids 0..8
JPEG_SOI = b"\xff\xd8"
_TMP_SUFFIX = ".tmp"  # unfinished files of an atomic writer; never counted as frames
_SENSOR_DIRS = tuple(d for d in layout.all_modality_dirnames() if d not in ("metas", "bboxes"))


class Route:
    """Read access to one LEAD route directory `<data_root>/data/<Scenario>/<route_dir>/`.

    Args:
        data_root: LEAD's `carla_root` (holds `data/`).
        route_id: `"<Scenario>/<route_dir>"`.

    Raises:
        LeadFormatError: the route directory does not exist.
    """

    def __init__(self, data_root: Path | str, route_id: str) -> None:
        self.data_root = Path(data_root)
        self.route_id = route_id
        self.scenario = route_id.split("/")[0]
        self.path = layout.route_path(data_root, route_id)
        self._folders: dict[tuple[str, bool], Path] = {}
        if not self.path.is_dir():
            raise LeadFormatError(self.path, "missing folder: route directory does not exist")

    def __repr__(self) -> str:
        return f"Route({str(self.data_root)!r}, {self.route_id!r})"

    # --- per-route files ------------------------------------------------------------------------
    def results(self) -> dict | None:
        """Parsed results.json (RouteRecord), or None if the route has none (unfinished).

        Raises:
            LeadFormatError: invalid JSON, or a structure without the keys LEAD's route filter reads.
        """
        path = layout.results_path(self.path)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            results = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LeadFormatError(path, f"bad JSON ({exc})") from None
        problem = results_problem(results)
        if problem is not None:
            raise LeadFormatError(path, problem)
        return results

    def num_frames(self) -> int:
        """Number of files in bboxes/ (LEAD's frame count); 0 if there is no bboxes/ folder."""
        try:
            entries = os.scandir(self.path / "bboxes")
        except (FileNotFoundError, NotADirectoryError):
            return 0
        with entries:
            return sum(1 for e in entries if not e.name.endswith(_TMP_SUFFIX))

    def has_meta0(self) -> bool:
        """Whether metas/0000.pkl exists (LEAD requires it)."""
        return layout.modality_path(self.path, "metas", 0).is_file()

    def modalities(self) -> dict[str, bool]:
        """Which modality folders exist, e.g. {"rgb": True, "rgb_perturbated": True, "lidar": True, ...}."""
        return {name: (self.path / name).is_dir() for name in layout.all_modality_dirnames()}

    def usability(self) -> tuple[bool, str | None]:
        """`route_usability(self.results(), self.has_meta0())`."""
        return route_usability(self.results(), self.has_meta0())

    def fingerprint(self) -> str:
        """Cheap stat-based hash of the route: changes when any meta/box/results file or listing changes.

        Hashes name, size and mtime_ns of results.json and of every file in metas/ and bboxes/, plus the
        mtime_ns of each sensor folder, which changes with its listing. No file is opened and no sensor file
        is stat'ed: ~1 ms for a 100-frame route, about the cost of reading one meta pickle.
        """
        digest = hashlib.blake2b(digest_size=16)
        digest.update(self.route_id.encode())
        try:
            st = os.stat(layout.results_path(self.path))
            digest.update(f"results.json:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(b"results.json:-\n")
        for name in ("metas", "bboxes"):
            digest.update(f"[{name}]".encode())
            try:
                with os.scandir(os.path.join(self.path, name)) as entries:
                    rows = sorted(f"{e.name}:{(st := e.stat()).st_size}:{st.st_mtime_ns}\n" for e in entries)
            except (FileNotFoundError, NotADirectoryError):
                digest.update(b"-\n")
                continue
            digest.update("".join(rows).encode())
        for name in _SENSOR_DIRS:  # a folder's mtime_ns changes whenever a file is added, removed or renamed
            try:
                mtime_ns = os.stat(os.path.join(self.path, name)).st_mtime_ns
            except (FileNotFoundError, NotADirectoryError):
                mtime_ns = -1
            digest.update(f"[{name}]{mtime_ns}\n".encode())
        return digest.hexdigest()

    # --- per-frame files ------------------------------------------------------------------------
    def _file(self, modality: str, frame_idx: int, perturbated: bool = False) -> Path:
        """`layout.modality_path` of this route, with the folder Path built once per modality."""
        key = (modality, perturbated)
        folder = self._folders.get(key)
        if folder is None:
            folder = self._folders[key] = layout.modality_dir(self.path, modality, perturbated=perturbated)
        return folder / layout.frame_filename(modality, frame_idx)

    def _read_bytes(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise LeadFormatError(path, "file is missing") from None
        except IsADirectoryError:
            raise LeadFormatError(path, "expected a file, found a directory") from None

    def meta(self, frame_idx: int) -> dict:
        """metas/NNNN.pkl: LEAD's measurement dict (~350 keys; float-suffixed keys are strings)."""
        path = self._file("metas", frame_idx)
        meta = read_lzma_pickle(path)
        if not isinstance(meta, dict):
            raise LeadFormatError(path, f"expected a dict of measurements, found {type(meta).__name__}")
        return meta

    def boxes(self, frame_idx: int) -> list[dict]:
        """bboxes/NNNN.pkl: list of box dicts sorted by distance, first = ego_car (LEAD_FORMAT §1.8)."""
        path = self._file("bboxes", frame_idx)
        boxes = read_lzma_pickle(path)
        if not isinstance(boxes, list) or not all(isinstance(b, dict) for b in boxes):
            raise LeadFormatError(path, f"expected a list of box dicts, found {type(boxes).__name__}")
        return boxes

    def rgb_jpeg(self, frame_idx: int, *, perturbated: bool = False) -> bytes:
        """Original JPEG bytes of rgb[_perturbated]/NNNN.jpg (only the SOI marker is checked)."""
        path = self._file("rgb", frame_idx, perturbated)
        payload = self._read_bytes(path)
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

    def _png(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        payload = self._read_bytes(path)
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
        array = self._png(path)
        check_shape(path, array, shape, np.uint8)
        if array.max(initial=0) >= num_classes:
            raise LeadFormatError(path, f"{what} {int(array.max())} out of range 0..{num_classes - 1}")
        return array

    def depth_m(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(96, 288) float32 depth in metres (uint8 PNG: v/255*50; uint16 PNG: v/65535*96)."""
        path = self._file("depth", frame_idx, perturbated)
        array = self._png(path)
        check_shape(path, array, (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX))
        if array.dtype == np.uint8:  # float32(v) * float32 scale, computed in float32
            return np.multiply(array, np.float32(DEPTH_MAX_M / 255.0), dtype=np.float32)
        if array.dtype == np.uint16:
            return np.multiply(array, np.float32(DEPTH16_MAX_M / 65535.0), dtype=np.float32)
        raise LeadFormatError(path, f"expected a uint8 or uint16 depth PNG, found {array.dtype}")

    def hdmap(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(256, 256) uint8 ChauffeurNet ids 0..8 (2 px/m, ego at (128, 128), rows = +y, cols = +x)."""
        return self._label_png(
            "hdmap", frame_idx, perturbated, (HDMAP_SIZE_PX, HDMAP_SIZE_PX), NUM_HDMAP_CLASSES, "hdmap id"
        )

    def lidar(self, frame_idx: int) -> np.ndarray:
        """(N, 4) float32 `[x, y, z, time]` accumulated point cloud in the ego frame (lazrs, laspy semantics).

        LEAD's plain layout (LAS <= 1.3, LAZ, unscaled extra dimension `time`) is decoded by `decode_laz`;
        anything else, and any file that fast path cannot decode, goes through `laspy.read`.
        """
        path = self._file("lidar", frame_idx)
        payload = self._read_bytes(path)
        points = decode_laz(payload)
        return points if points is not None else read_laz_with_laspy(path, payload)

    def radar(self, frame_idx: int, *, perturbated: bool = False) -> dict[str, np.ndarray]:
        """radar[_perturbated]/NNNN.npz: {"radar1".."radar4": (n, 4) float16 [x, y, z, v]}."""
        path = self._file("radar", frame_idx, perturbated)
        payload = self._read_bytes(path)
        radar = read_npz_arrays(payload, RADAR_KEYS)
        if radar is None:
            radar = read_radar_with_numpy(path, payload)
        for key, array in radar.items():
            if array.ndim != 2 or array.shape[1] != 4:
                raise LeadFormatError(path, f"{key}: expected shape (n, 4), found {array.shape}")
        return radar


def check_shape(path: Path, array: np.ndarray, shape: tuple[int, ...], dtype: Any = None) -> None:
    if array.shape != shape:
        raise LeadFormatError(path, f"expected shape {shape}, found {array.shape}")
    if dtype is not None and array.dtype != dtype:
        raise LeadFormatError(path, f"expected dtype {np.dtype(dtype)}, found {array.dtype}")
