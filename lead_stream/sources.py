"""One raw LEAD route on disk → Python objects (dicts, numpy arrays, JPEG bytes), read unchanged.

Reads LEAD's own files (LEAD_FORMAT §1): `results.json`, lzma pickles in `metas/` and `bboxes/`, JPEG,
PNG, LAZ and NPZ sensor files, normal and `*_perturbated`. Nothing is written. Every file that cannot be
read raises `LeadFormatError(path, problem)`; route eligibility follows LEAD's `route_failed` rule exactly
(`route_usability`), and the frame count is the number of files in `bboxes/` (LEAD's definition).
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lead_stream import layout
from lead_stream.constants import (
    DEPTH16_MAX_M,
    DEPTH_HEIGHT_PX,
    DEPTH_MAX_M,
    DEPTH_WIDTH_PX,
    FAILED_STATUSES,
    HDMAP_SIZE_PX,
    NUM_RADAR_SENSORS,
    NUM_SEMANTIC_CLASSES,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.errors import LeadFormatError

RADAR_KEYS = tuple(f"radar{i}" for i in range(1, NUM_RADAR_SENSORS + 1))
NUM_HDMAP_CLASSES = 9            # ChauffeurNet ids 0..8
JPEG_SOI = b"\xff\xd8"
_TMP_SUFFIX = ".tmp"             # unfinished files of an atomic writer; never counted as frames
_SENSOR_DIRS = tuple(d for d in layout.all_modality_dirnames() if d not in ("metas", "bboxes"))

# Globals a LEAD pickle may reference: numpy arrays / scalars / dtypes and plain containers, nothing else.
_SAFE_BUILTINS = frozenset({
    "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
    "bool", "slice", "range",
})
_SAFE_NUMPY_NAMES = frozenset({"_reconstruct", "scalar", "_frombuffer", "dtype", "ndarray"})
_SAFE_OTHER = frozenset({("collections", "OrderedDict"), ("collections", "deque"), ("_codecs", "encode"),
                         ("copyreg", "_reconstructor")})


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only builtins containers and numpy array/scalar/dtype reconstructors."""

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)   # protocol <= 2
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]   # pickles from numpy 1.x, read on numpy 2
        allowed = ((module == "builtins" and name in _SAFE_BUILTINS)
                   or (module.split(".")[0] == "numpy" and name in _SAFE_NUMPY_NAMES)
                   or module == "numpy.dtypes" or (module, name) in _SAFE_OTHER)
        if not allowed:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} (only builtins and numpy are allowed)")
        return super().find_class(module, name)


def read_lzma_pickle(path: Path) -> Any:
    """Load one LEAD pickle (xz/lzma container around a standard pickle).

    Raises:
        LeadFormatError: the file is missing, truncated, not xz, or not a pickle of builtins + numpy.
    """
    try:
        with lzma.open(path, "rb") as handle:
            return _NumpyOnlyUnpickler(handle).load()
    except FileNotFoundError:
        raise LeadFormatError(path, "file is missing") from None
    except (lzma.LZMAError, EOFError) as exc:
        problem = f"truncated or corrupt lzma pickle ({type(exc).__name__}: {exc})"
        raise LeadFormatError(path, problem) from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError) as exc:
        problem = f"corrupt pickle inside the lzma container ({type(exc).__name__}: {exc})"
        raise LeadFormatError(path, problem) from None


def discover_routes(data_root: Path | str) -> list[str]:
    """Sorted route_ids (`"<Scenario>/<route_dir>"`) below `<data_root>/data`, skipping non-directories.

    Raises:
        LeadFormatError: `<data_root>/data` does not exist or is not a directory.
    """
    root = layout.routes_root(data_root)
    if not root.is_dir():
        raise LeadFormatError(root, "missing folder: expected <data_root>/data/<Scenario>/<route>/")
    route_ids = []
    for scenario in sorted(os.scandir(root), key=lambda e: e.name):
        if not scenario.is_dir():
            continue
        for route in os.scandir(scenario.path):
            if route.is_dir():
                route_ids.append((scenario.name, route.name))
    return [f"{scenario}/{route}" for scenario, route in sorted(route_ids)]


def _results_problem(results: Any) -> str | None:
    """What is structurally wrong with a parsed results.json for the §2.3 rule (None if nothing)."""
    if not isinstance(results, dict):
        return f"expected a JSON object (RouteRecord), found {type(results).__name__}"
    if not isinstance(results.get("status"), str):
        return "missing or non-string key 'status'"
    scores = results.get("scores")
    if not isinstance(scores, dict) or not isinstance(scores.get("score_composed"), (int, float)):
        return "missing numeric key 'scores.score_composed'"
    num = results.get("num_infractions")
    if isinstance(num, bool) or not isinstance(num, (int, float)):
        return "missing numeric key 'num_infractions'"
    infractions = results.get("infractions")
    if not isinstance(infractions, dict):
        return "missing object 'infractions'"
    for key in ("min_speed_infractions", "outside_route_lanes"):
        if not isinstance(infractions.get(key), list):
            return f"missing list 'infractions.{key}'"
    return None


def route_usability(results: dict | None, has_meta0: bool) -> tuple[bool, str | None]:
    """LEAD's `route_failed` rule (abstract_bucket_collection.py, LEAD_FORMAT §2.3), negated.

    A route is usable when results.json and metas/0000.pkl exist and its `infraction` flag is cleared
    (score 100; or score < 100 and `num_infractions == len(min_speed_infractions)`; or status
    "Completed" and `num_infractions == len(min_speed) + len(outside_route_lanes)`; or status
    "Perfect") and its status is not one of FAILED_STATUSES.

    Args:
        results: parsed results.json, or None when the file is missing.
        has_meta0: whether metas/0000.pkl exists.

    Returns:
        (usable, reason): reason is None when usable, else a short human explanation.

    Raises:
        LeadFormatError: `results` lacks the keys the rule reads.
    """
    if results is None:
        return False, "results.json missing (route not finished)"
    if not has_meta0:
        return False, "metas/0000.pkl missing"
    problem = _results_problem(results)
    if problem is not None:
        raise LeadFormatError(layout.RESULTS_FILENAME, problem)
    status = results["status"]
    score = results["scores"]["score_composed"]
    num_infractions = results["num_infractions"]
    infractions = results["infractions"]
    num_min_speed = len(infractions["min_speed_infractions"])
    num_outside_lanes = len(infractions["outside_route_lanes"])

    infraction = True
    if score == 100.0:
        infraction = False
    if score < 100.0 and num_infractions == num_min_speed:
        infraction = False
    if status == "Completed" and num_infractions == num_min_speed + num_outside_lanes:
        infraction = False
    if status == "Perfect":
        infraction = False

    if status in FAILED_STATUSES:
        return False, f"status {status!r} (crash/failure status), score_composed {score}"
    if infraction:
        counted = {k: len(v) for k, v in infractions.items() if isinstance(v, list) and v}
        detail = ", ".join(f"{k}={n}" for k, n in sorted(counted.items())) or "none listed"
        return False, (f"status {status!r}, score_composed {score} with {num_infractions} infraction(s) "
                       f"beyond min-speed/outside-lanes ({detail})")
    return True, None


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
        problem = _results_problem(results)
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
        for name in _SENSOR_DIRS:   # a folder's mtime_ns changes whenever a file is added, removed or renamed
            try:
                mtime_ns = os.stat(os.path.join(self.path, name)).st_mtime_ns
            except (FileNotFoundError, NotADirectoryError):
                mtime_ns = -1
            digest.update(f"[{name}]{mtime_ns}\n".encode())
        return digest.hexdigest()

    # --- per-frame files ------------------------------------------------------------------------
    def _file(self, modality: str, frame_idx: int, perturbated: bool = False) -> Path:
        return layout.modality_path(self.path, modality, frame_idx, perturbated=perturbated)

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
        _check_shape(path, image, (RGB_HEIGHT_PX, RGB_WIDTH_PX, 3))
        return image

    def _png(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        payload = self._read_bytes(path)
        try:
            with Image.open(io.BytesIO(payload)) as image:
                image.load()
                mode = image.mode
                array = np.array(image)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise LeadFormatError(path, f"corrupt PNG ({exc})") from None
        if mode == "I" and array.size and 0 <= array.min() and array.max() <= 65535:
            array = array.astype(np.uint16)   # some Pillow versions open 16-bit grey PNGs as int32 "I"
        if array.ndim != 2:
            problem = f"expected a single-channel PNG, found mode {mode} shape {array.shape}"
            raise LeadFormatError(path, problem)
        return array

    def semantics(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(384, 1152) uint8 TransFuser semantic classes 0..9."""
        path = self._file("semantics", frame_idx, perturbated)
        array = self._png(path)
        _check_shape(path, array, (RGB_HEIGHT_PX, RGB_WIDTH_PX), np.uint8)
        if array.max(initial=0) >= NUM_SEMANTIC_CLASSES:
            problem = f"semantic class {int(array.max())} out of range 0..{NUM_SEMANTIC_CLASSES - 1}"
            raise LeadFormatError(path, problem)
        return array

    def depth_m(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(96, 288) float32 depth in metres (uint8 PNG: v/255*50; uint16 PNG: v/65535*96)."""
        path = self._file("depth", frame_idx, perturbated)
        array = self._png(path)
        _check_shape(path, array, (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX))
        if array.dtype == np.uint8:
            return array.astype(np.float32) * np.float32(DEPTH_MAX_M / 255.0)
        if array.dtype == np.uint16:
            return array.astype(np.float32) * np.float32(DEPTH16_MAX_M / 65535.0)
        raise LeadFormatError(path, f"expected a uint8 or uint16 depth PNG, found {array.dtype}")

    def hdmap(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(256, 256) uint8 ChauffeurNet ids 0..8 (2 px/m, ego at (128, 128), rows = +y, cols = +x)."""
        path = self._file("hdmap", frame_idx, perturbated)
        array = self._png(path)
        _check_shape(path, array, (HDMAP_SIZE_PX, HDMAP_SIZE_PX), np.uint8)
        if array.max(initial=0) >= NUM_HDMAP_CLASSES:
            problem = f"hdmap id {int(array.max())} out of range 0..{NUM_HDMAP_CLASSES - 1}"
            raise LeadFormatError(path, problem)
        return array

    def lidar(self, frame_idx: int) -> np.ndarray:
        """(N, 4) float32 `[x, y, z, time]` accumulated point cloud in the ego frame (laspy + lazrs)."""
        import laspy

        path = self._file("lidar", frame_idx)
        payload = self._read_bytes(path)
        try:
            las = laspy.read(io.BytesIO(payload))
            xyz = np.asarray(las.xyz, dtype=np.float32)
            names = set(las.point_format.dimension_names)
            if "time" not in names:
                problem = f"LAZ has no extra dimension 'time' (dimensions: {sorted(names)})"
                raise LeadFormatError(path, problem)
            time = np.asarray(las["time"], dtype=np.float32)
        except LeadFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - laspy/lazrs raise many unrelated types for corrupt input
            raise LeadFormatError(path, f"corrupt LAZ ({type(exc).__name__}: {exc})") from None
        return np.concatenate([xyz, time[:, None]], axis=1)

    def radar(self, frame_idx: int, *, perturbated: bool = False) -> dict[str, np.ndarray]:
        """radar[_perturbated]/NNNN.npz: {"radar1".."radar4": (n, 4) float16 [x, y, z, v]}."""
        path = self._file("radar", frame_idx, perturbated)
        payload = self._read_bytes(path)
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                missing = [k for k in RADAR_KEYS if k not in npz.files]
                if missing:
                    raise LeadFormatError(path, f"missing arrays {missing}; found {sorted(npz.files)}")
                radar = {k: npz[k] for k in RADAR_KEYS}
        except LeadFormatError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            raise LeadFormatError(path, f"corrupt NPZ ({type(exc).__name__}: {exc})") from None
        for key, array in radar.items():
            if array.ndim != 2 or array.shape[1] != 4:
                raise LeadFormatError(path, f"{key}: expected shape (n, 4), found {array.shape}")
        return radar


def _check_shape(path: Path, array: np.ndarray, shape: tuple[int, ...], dtype: Any = None) -> None:
    if array.shape != shape:
        raise LeadFormatError(path, f"expected shape {shape}, found {array.shape}")
    if dtype is not None and array.dtype != dtype:
        raise LeadFormatError(path, f"expected dtype {np.dtype(dtype)}, found {array.dtype}")

