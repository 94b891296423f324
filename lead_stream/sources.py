"""One raw LEAD route on disk → Python objects (dicts, numpy arrays, JPEG bytes), read unchanged.

Reads LEAD's own files (LEAD_FORMAT §1): `results.json`, lzma pickles in `metas/` and `bboxes/`, JPEG,
PNG, LAZ and NPZ sensor files, normal and `*_perturbated`. Nothing is written. Every file that cannot be
read raises `LeadFormatError(path, problem)`; route eligibility follows LEAD's `route_failed` rule exactly
(`route_usability`), and the frame count is the number of files in `bboxes/` (LEAD's definition).

LEAD's own layouts of the per-frame sensor files (LAZ with an unscaled `time` dimension, NPZ as numpy
writes it, 8-bit grey PNG) go through small readers (`decode_laz`, `read_npz_arrays`, `decode_grey_png`)
that return the library readers' arrays bit for bit with less overhead; they return None for anything they
do not fully check, and the file is then read by laspy / np.load / Pillow as before, errors included.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import lzma
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
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
        _check_shape(path, image, (RGB_HEIGHT_PX, RGB_WIDTH_PX, 3))
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
                array = _pixels(image)
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
        return self._label_png("semantics", frame_idx, perturbated, (RGB_HEIGHT_PX, RGB_WIDTH_PX),
                               NUM_SEMANTIC_CLASSES, "semantic class")

    def _label_png(self, modality: str, frame_idx: int, perturbated: bool, shape: tuple[int, int],
                   num_classes: int, what: str) -> np.ndarray:
        """A uint8 label PNG of `shape` whose values are below `num_classes` (else LeadFormatError)."""
        path = self._file(modality, frame_idx, perturbated)
        array = self._png(path)
        _check_shape(path, array, shape, np.uint8)
        if array.max(initial=0) >= num_classes:
            raise LeadFormatError(path, f"{what} {int(array.max())} out of range 0..{num_classes - 1}")
        return array

    def depth_m(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(96, 288) float32 depth in metres (uint8 PNG: v/255*50; uint16 PNG: v/65535*96)."""
        path = self._file("depth", frame_idx, perturbated)
        array = self._png(path)
        _check_shape(path, array, (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX))
        if array.dtype == np.uint8:   # float32(v) * float32 scale, computed in float32
            return np.multiply(array, np.float32(DEPTH_MAX_M / 255.0), dtype=np.float32)
        if array.dtype == np.uint16:
            return np.multiply(array, np.float32(DEPTH16_MAX_M / 65535.0), dtype=np.float32)
        raise LeadFormatError(path, f"expected a uint8 or uint16 depth PNG, found {array.dtype}")

    def hdmap(self, frame_idx: int, *, perturbated: bool = False) -> np.ndarray:
        """(256, 256) uint8 ChauffeurNet ids 0..8 (2 px/m, ego at (128, 128), rows = +y, cols = +x)."""
        return self._label_png("hdmap", frame_idx, perturbated, (HDMAP_SIZE_PX, HDMAP_SIZE_PX), NUM_HDMAP_CLASSES,
                               "hdmap id")

    def lidar(self, frame_idx: int) -> np.ndarray:
        """(N, 4) float32 `[x, y, z, time]` accumulated point cloud in the ego frame (lazrs, laspy semantics).

        LEAD's plain layout (LAS <= 1.3, LAZ, unscaled extra dimension `time`) is decoded by `decode_laz`;
        anything else, and any file that fast path cannot decode, goes through `laspy.read`.
        """
        path = self._file("lidar", frame_idx)
        payload = self._read_bytes(path)
        points = decode_laz(payload)
        return points if points is not None else _read_laz_with_laspy(path, payload)

    def radar(self, frame_idx: int, *, perturbated: bool = False) -> dict[str, np.ndarray]:
        """radar[_perturbated]/NNNN.npz: {"radar1".."radar4": (n, 4) float16 [x, y, z, v]}."""
        path = self._file("radar", frame_idx, perturbated)
        payload = self._read_bytes(path)
        radar = read_npz_arrays(payload, RADAR_KEYS)
        if radar is None:
            radar = _read_radar_with_numpy(path, payload)
        for key, array in radar.items():
            if array.ndim != 2 or array.shape[1] != 4:
                raise LeadFormatError(path, f"{key}: expected shape (n, 4), found {array.shape}")
        return radar


# ---------------------------------------------------------------------------------------------------
# fast readers for LEAD's own file layouts: each returns None for anything it does not fully check, and the
# caller then reads the file with the library (np.load, laspy, Pillow), which also words every error
# ---------------------------------------------------------------------------------------------------
def _read_radar_with_numpy(path: Path, payload: bytes) -> dict[str, np.ndarray]:
    """The radar arrays through `np.load` (any NPZ); the reference for `read_npz_arrays`."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            missing = [k for k in RADAR_KEYS if k not in npz.files]
            if missing:
                raise LeadFormatError(path, f"missing arrays {missing}; found {sorted(npz.files)}")
            return {k: npz[k] for k in RADAR_KEYS}
    except LeadFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise LeadFormatError(path, f"corrupt NPZ ({type(exc).__name__}: {exc})") from None


# numpy's own .npy header for a plain little/big-endian bool/int/float array ("{'descr': '<f2', ...}")
_NPY_HEADER = re.compile(r"\{'descr': '([<>|][biuf][1248])', 'fortran_order': (True|False), "
                         r"'shape': \((|\d+,|\d+(?:, \d+)+)\), \} *\n")
_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER_SIZE = 10000   # np.load refuses longer headers (max_header_size)


def read_npz_arrays(payload: bytes, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """`{key: np.load(payload)[key]}` for NPZ files as numpy (or `zipfile`) writes them, without `zipfile`
    and `np.load`'s per-array header `literal_eval`; None = not handled here (odd layout, missing key, any
    read problem), and the caller uses `np.load`, which also produces the error for a broken file.

    Handled: one-disk zip, no comments / zip64 directory / encryption / data descriptors, members stored or
    deflated, each `<key>.npy` checked against its CRC and size, with a plain .npy header.

    Returns:
        {key: array} equal to `np.load`'s (dtype, shape, memory order, values; writable copies).
    """
    try:
        members = _zip_members(payload)
        if members is None:
            return None
        arrays = {}
        for key in keys:
            if key in members or f"{key}.npy" not in members:   # np.load would look up `key` itself first
                return None
            data = _zip_member_bytes(payload, *members[f"{key}.npy"])
            array = None if data is None else _npy_array(data)
            if array is None:
                return None
            arrays[key] = array
    except (ValueError, IndexError, struct.error, zlib.error):   # UnicodeDecodeError is a ValueError
        return None
    return arrays


_ZIP_EOCD = struct.Struct("<4s4H2IH")              # end of central directory record (22 bytes)
_ZIP_CENTRAL = struct.Struct("<4s6H3I5H2I")         # central directory file header (46 bytes)
_ZIP_LOCAL = struct.Struct("<4s5H3I2H")            # local file header (30 bytes)
_ZIP_UTF8_FLAG = 0x800


def _zip_members(payload: bytes) -> dict[str, tuple[str, int, int, int, int, int]] | None:
    """{name: (name, method, crc, compressed size, size, local header offset)} from the central directory
    of a plain zip (see `read_npz_arrays`); None for anything else."""
    eocd_at = len(payload) - _ZIP_EOCD.size
    if eocd_at < 0 or payload[eocd_at - 20: eocd_at - 16] == b"PK\x06\x07":   # zip64 locator
        return None
    magic, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, comment = _ZIP_EOCD.unpack_from(
        payload, eocd_at)
    if (magic != b"PK\x05\x06" or disk or cd_disk or disk_entries != entries or comment
            or cd_offset + cd_size != eocd_at):
        return None
    members: dict[str, tuple[str, int, int, int, int, int]] = {}
    pos = cd_offset
    for _ in range(entries):
        (magic, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len, _, _, _,
         offset) = _ZIP_CENTRAL.unpack_from(payload, pos)
        if (magic != b"PK\x01\x02" or flags & ~_ZIP_UTF8_FLAG or method not in (0, 8) or extra_len
                or comment_len):
            return None
        raw_name = payload[pos + _ZIP_CENTRAL.size: pos + _ZIP_CENTRAL.size + name_len]
        name = raw_name.decode("utf-8" if flags & _ZIP_UTF8_FLAG else "cp437")
        if name in members:
            return None
        members[name] = (name, method, crc, compressed, size, offset)
        pos += _ZIP_CENTRAL.size + name_len
    return members if pos == eocd_at else None


def _zip_member_bytes(payload: bytes, name: str, method: int, crc: int, compressed: int, size: int,
                      offset: int) -> bytes | None:
    """The uncompressed bytes of one member, checked as `zipfile` checks them (local header magic and
    name, CRC-32) plus its size; None on any mismatch."""
    magic, _, flags, _, _, _, _, _, _, name_len, extra_len = _ZIP_LOCAL.unpack_from(payload, offset)
    start = offset + _ZIP_LOCAL.size
    local_name = payload[start: start + name_len].decode("utf-8" if flags & _ZIP_UTF8_FLAG else "cp437")
    if magic != b"PK\x03\x04" or flags & ~_ZIP_UTF8_FLAG or local_name != name:
        return None
    start += name_len + extra_len
    raw = payload[start: start + compressed]
    if len(raw) != compressed:
        return None
    data = raw if method == 0 else zlib.decompress(raw, -15)
    return data if len(data) == size and zlib.crc32(data) == crc else None


def _npy_array(data: bytes) -> np.ndarray | None:
    """One .npy member with a plain header → a writable array laid out as `np.lib.format.read_array`'s."""
    if data[:6] != _NPY_MAGIC or data[6] not in (1, 2, 3) or data[7] != 0:
        return None
    header_len, start = (struct.unpack_from("<H", data, 8)[0], 10) if data[6] == 1 else (
        struct.unpack_from("<I", data, 8)[0], 12)
    if header_len > _NPY_MAX_HEADER_SIZE:
        return None
    match = _NPY_HEADER.fullmatch(data[start: start + header_len].decode("latin1"))
    if match is None:
        return None
    dtype = np.dtype(match[1])
    shape = tuple(int(v) for v in match[3].split(",") if v.strip())
    count = math.prod(shape)
    offset = start + header_len
    if len(data) < offset + count * dtype.itemsize:
        return None
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
    if match[2] == "True":
        array.shape = shape[::-1]
        return array.transpose()
    array.shape = shape
    return array


def _read_laz_with_laspy(path: Path, payload: bytes) -> np.ndarray:
    """`Route.lidar` through `laspy.read` (any LAS / LAZ layout); the reference for `decode_laz`."""
    import laspy

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


# LAS <= 1.3 point format id → standard record size in bytes; X, Y, Z are int32 at offsets 0, 4, 8.
_LAS_POINT_SIZES = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63}
# extra-bytes data types 1..10 (LAS 1.4 R15 table 24) → numpy dtype
_EXTRA_BYTES_DTYPES = {1: "u1", 2: "i1", 3: "<u2", 4: "<i2", 5: "<u4", 6: "<i4", 7: "<u8", 8: "<i8", 9: "<f4",
                       10: "<f8"}
_EXTRA_BYTES_SIZE = 192
_EXTRA_BYTES_SCALE_OR_OFFSET = 0b0001_1000
_LASZIP_VLR = (b"laszip encoded", 22204)
_EXTRA_BYTES_VLR = (b"LASF_Spec", 4)
_VLR_HEADER_SIZE = 54
_LAZ_VARIABLE_CHUNK_SIZE = 0xFFFFFFFF
_LAS_HEADER_SIZES = {0: 227, 1: 227, 2: 227, 3: 235}   # LAS 1.minor → smallest header laspy accepts


@functools.cache
def _standard_dimension_names(point_format: int) -> tuple[str, ...]:
    import laspy

    return tuple(laspy.PointFormat(point_format).standard_dimension_names)


def _las_vlrs(payload: bytes, header_size: int, num_vlrs: int,
              point_offset: int) -> dict[tuple[bytes, int], list[bytes]]:
    """{(user id, record id): [record data, ...]} of the VLRs between a LAS header and the point data.

    Raises:
        ValueError: the VLRs run past the start of the point data.
    """
    vlrs: dict[tuple[bytes, int], list[bytes]] = {}
    pos = header_size
    for _ in range(num_vlrs):
        user_id = payload[pos + 2: pos + 18].split(b"\0", 1)[0]
        record_id, length = struct.unpack_from("<HH", payload, pos + 18)
        start = pos + _VLR_HEADER_SIZE
        if start + length > point_offset:
            raise ValueError("VLRs run past the point data")
        vlrs.setdefault((user_id, record_id), []).append(payload[start: start + length])
        pos = start + length
    return vlrs


def _time_field(extra_bytes: bytes, point_format: int) -> tuple[int, str, int] | None:
    """(byte offset, numpy dtype, record size) of an unscaled extra dimension `time` described by an
    extra-bytes VLR of plain numeric dimensions with distinct, non-standard names; None otherwise."""
    if len(extra_bytes) % _EXTRA_BYTES_SIZE:
        return None
    names = set(_standard_dimension_names(point_format))
    offset, found = _LAS_POINT_SIZES[point_format], None
    for start in range(0, len(extra_bytes), _EXTRA_BYTES_SIZE):
        data_type, options = extra_bytes[start + 2], extra_bytes[start + 3]
        dtype = _EXTRA_BYTES_DTYPES.get(data_type)
        name = extra_bytes[start + 4: start + 36].split(b"\0", 1)[0].decode()
        if dtype is None or name in names:
            return None
        names.add(name)
        if name == "time":
            if options & _EXTRA_BYTES_SCALE_OR_OFFSET:
                return None
            found = (offset, dtype)
        offset += np.dtype(dtype).itemsize
    return None if found is None else (found[0], found[1], offset)


def _chunk_table_matches(payload: bytes, point_offset: int, chunk_table: int, vlr: Any,
                         num_points: int) -> bool:
    """Whether the LAZ chunk table accounts for exactly the compressed bytes and the points.

    laspy's (parallel) reader splits the points by this table, while the one-call sequential decoder does
    not need it; checking it keeps every file laspy refuses on the laspy path (and its error message).

    Args:
        vlr: the file's `lazrs.LazVlr`.
    """
    import lazrs

    source = io.BytesIO(payload)
    source.seek(point_offset)
    entries = lazrs.read_chunk_table(source, vlr)
    if sum(byte_count for _, byte_count in entries) != chunk_table - point_offset - 8:
        return False
    chunk_size = vlr.chunk_size()
    if chunk_size == _LAZ_VARIABLE_CHUNK_SIZE:
        return sum(count for count, _ in entries) == num_points
    return len(entries) == -(-num_points // chunk_size) if chunk_size else False


def decode_laz(payload: bytes) -> np.ndarray | None:
    """LEAD's LiDAR file → (N, 4) float32 [x, y, z, time] without laspy's reader; None = not handled here.

    Handles LAZ (LAS 1.0-1.3, point formats 0-5) with a chunk table and an unscaled extra dimension `time`
    described by an extra-bytes VLR, whose record size is exactly the standard size plus the described extra
    dimensions: LEAD's layout. It decompresses with lazrs in one call (single thread) and applies laspy's own
    arithmetic (x = X * scale + offset in float64, then float32), so the result equals `laspy.read`'s bit for
    bit. Anything else, or any decoding problem, returns None and the caller uses laspy (which also produces
    the error message for a broken file).
    """
    import lazrs

    try:
        minor = payload[25]
        if payload[:4] != b"LASF" or payload[24] != 1 or minor not in _LAS_HEADER_SIZES:
            return None
        header_size, = struct.unpack_from("<H", payload, 94)
        point_offset, num_vlrs = struct.unpack_from("<II", payload, 96)
        format_byte, record_size, num_points = struct.unpack_from("<BHI", payload, 104)
        scales = np.array(struct.unpack_from("<3d", payload, 131), dtype=np.float64)
        offsets = np.array(struct.unpack_from("<3d", payload, 155), dtype=np.float64)
        point_format = format_byte & 0x3F
        if (format_byte & 0xC0 != 0x80 or point_format not in _LAS_POINT_SIZES
                or header_size < _LAS_HEADER_SIZES[minor]):
            return None
        vlrs = _las_vlrs(payload, header_size, num_vlrs, point_offset)
        laszip, extra = vlrs.get(_LASZIP_VLR, []), vlrs.get(_EXTRA_BYTES_VLR, [])
        if len(laszip) != 1 or len(extra) != 1:
            return None
        vlr = lazrs.LazVlr(laszip[0])
        if vlr.item_size() != record_size:
            return None
        time_field = _time_field(extra[0], point_format)
        if time_field is None or time_field[2] != record_size:
            return None
        chunk_table, = struct.unpack_from("<q", payload, point_offset)
        if not point_offset + 8 <= chunk_table <= len(payload) - 8:
            return None
        if not _chunk_table_matches(payload, point_offset, chunk_table, vlr, num_points):
            return None
        compressed = bytearray(payload[point_offset:])
        struct.pack_into("<q", compressed, 0, chunk_table - point_offset)   # lazrs wants it buffer-relative
        raw = bytearray(num_points * record_size)
        lazrs.decompress_points(compressed, laszip[0], raw, False)
    except (ValueError, IndexError, struct.error, MemoryError, lazrs.LazrsError):   # incl. UnicodeDecodeError
        return None
    except BaseException as exc:   # a Rust panic inside lazrs (pyo3's PanicException is a BaseException)
        if type(exc).__name__ != "PanicException":
            raise
        return None
    time_offset, time_dtype, _ = time_field
    records = np.frombuffer(raw, dtype=np.dtype({"names": ["X", "Y", "Z", "time"],
                                                 "formats": ["<i4", "<i4", "<i4", time_dtype],
                                                 "offsets": [0, 4, 8, time_offset], "itemsize": record_size}))
    points = np.empty((num_points, 4), dtype=np.float32)
    for column, name in enumerate(("X", "Y", "Z")):
        points[:, column] = records[name] * scales[column] + offsets[column]   # laspy's ScaledArrayView
    points[:, 3] = records["time"]
    return points


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK = struct.Struct(">I4s")
_PNG_GREY8 = (8, 0, 0, 0, 0)    # IHDR bit depth, colour type, compression, filter, interlace


def decode_grey_png(payload: bytes) -> np.ndarray | None:
    """An 8-bit greyscale PNG → (H, W) uint8 through Pillow's own PNG ("zip") decoder, without the
    `PngImageFile` chunk machinery; None = not handled here, and the caller opens it with `Image.open`.

    Handled: non-interlaced 8-bit grey with only IHDR, IDAT and IEND chunks, every CRC valid, within
    Pillow's decompression-bomb limit: LEAD's semantics, hdmap and 8-bit depth PNGs. The pixels equal
    `np.array(Image.open(...))`'s: same decoder, same raw mode.
    """
    from PIL import Image

    if not payload.startswith(_PNG_SIGNATURE):
        return None
    header, idat, pos = None, [], len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(payload):
            return None
        length, kind = _PNG_CHUNK.unpack_from(payload, pos)
        end = pos + 8 + length
        if end + 4 > len(payload):
            return None
        data = payload[pos + 8: end]
        if zlib.crc32(data, zlib.crc32(kind)) != int.from_bytes(payload[end: end + 4], "big"):
            return None
        pos = end + 4
        if header is None:
            if kind != b"IHDR" or length != 13:
                return None
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat.append(data)
        elif kind == b"IEND":
            break
        else:
            return None
    width, height = header[:2]
    limit = Image.MAX_IMAGE_PIXELS   # above it Image.open warns or refuses: leave those to it
    if (header[2:] != _PNG_GREY8 or not idat or not 0 < width < 2 ** 31 or not 0 < height < 2 ** 31
            or (limit is not None and width * height > limit)):
        return None
    try:
        image = Image.frombytes("L", (width, height), b"".join(idat), "zip", "L")
    except Exception:  # noqa: BLE001 - a damaged stream is left to Image.open, which names the problem
        return None
    return _pixels(image)


def _pixels(image: Any) -> np.ndarray:
    """`np.array(image)` of a loaded Pillow image, without the `tobytes` round trip for 8-bit grey ones.

    An "L" image (all LEAD semantics / hdmap / 8-bit depth PNGs) is exported through Pillow's Arrow
    interface (Pillow >= 11.2) as a zero-copy uint8 view and copied once: (H, W) uint8, equal to
    `np.array(image)` and writable. Other modes, older Pillow or an export error use `np.array(image)`.
    """
    if image.mode == "L" and hasattr(image, "__arrow_c_array__"):
        import pyarrow as pa

        try:
            flat = pa.array(image)
        except (ValueError, TypeError, pa.ArrowException):
            return np.array(image)
        if flat.type == pa.uint8() and len(flat) == image.width * image.height and flat.null_count == 0:
            return flat.to_numpy(zero_copy_only=True).reshape(image.height, image.width).copy()
    return np.array(image)


def _check_shape(path: Path, array: np.ndarray, shape: tuple[int, ...], dtype: Any = None) -> None:
    if array.shape != shape:
        raise LeadFormatError(path, f"expected shape {shape}, found {array.shape}")
    if dtype is not None and array.dtype != dtype:
        raise LeadFormatError(path, f"expected dtype {np.dtype(dtype)}, found {array.dtype}")

