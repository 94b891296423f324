"""One LEAD frame → the named, encoded members of one sample (both sensor variants).

Input: a `FrameInputs` (raw arrays of one frame, read by `load_frame` from a `sources.Route`, or made by
hand in tests). Output: `build_sample(inputs) -> {member name: bytes}`, one entry per `MEMBERS` builder;
the builder name is the tar member name. A sample has four members:

    rgb.jpg, rgb_pert.jpg   original JPEG bytes (no re-encode) → (384, 1152, 3) uint8
    arrays.lz4              one `codecs.encode_arrays` container with two groups, "normal" and "perturbated"
                            (`VARIANTS`), each holding that sensor variant's arrays (`ARRAY_SPECS`) in its
                            own lz4 block, so a reader decompresses only the variant it serves
    targets.json            variant-independent scalars (speed, controls, commands, planning_valid, ...)

One container instead of one member per array saves ~12 KB of tar headers and padding per sample and lets
the loader decode a variant's arrays with one lz4 call. Plain webdataset yields `arrays.lz4` as bytes;
`lead_stream.codecs.decode("lz4", payload)` turns it into {"normal": {array name: array}, "perturbated": ...}. Semantics follow LEAD's `CARLAData` (LEAD_FORMAT
§4.1 steps 5, 7, 9, 10; §4.3; §4.4). The one non-obvious rule: the perturbated variant reads the
`*_perturbated` images/semantics/depth/hdmap/radar files but TRANSFORMS the shared LiDAR, boxes, target
points, waypoints, route and yaws with p' = R(r)^T (p - [0, t]), psi' = wrap(psi - r) (r in degrees).

Label arrays come from `labels` (boxes, BEV occupancy/semantics, radar) and ego targets from `targets`;
this module reads the frame, checks raw shapes, names each array and member, and encodes them.

Differences from LEAD, on purpose (more in `labels` and `targets`):
* LiDAR BEV is stored as uint8 counts 0..5 (LEAD: float counts / 5);
* depth is re-quantised with rounding (LEAD truncates, which can drop one 8-bit level);
* per-box future waypoints are not stored (LEAD uses them only for visualisation).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lz4.block
import numpy as np

from lead_stream import codecs, geometry
from lead_stream.constants import (
    DEPTH_HEIGHT_PX,
    DEPTH_MAX_M,
    DEPTH_WIDTH_PX,
    HDMAP_SIZE_PX,
    NUM_RADAR_SENSORS,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.errors import LeadFormatError
from lead_stream.labels import (
    bev_occupancy,
    box_labels,
    hdmap_to_bev,
    merge_bev_semantic,
    radar_detection_labels,
    radar_points,
)
from lead_stream.targets import sample_targets

# Bump when preprocessing output changes in a way the source hash of this file would not show
# (e.g. a change in constants.py or geometry.py); part of every pipeline id.
# 2: one `arrays.lz4` container (was one member per array), radar float16, per-variant targets in it.
PREPROCESS_VERSION = 2
# First lz4 pass of the array container in high-compression mode at this level (0 = fast mode). Decoding
# speed does not depend on it; 12 saves ~5% more bytes but costs ~25 ms per variant to build.
LZ4_HC_LEVEL = 4


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SensorInputs:
    """The per-variant raw sensors of one frame (normal files or `*_perturbated` files)."""

    rgb_jpeg: bytes                   # original JPEG file bytes, 384 x 1152 x 3
    semantics: np.ndarray             # (384, 1152) uint8, SemanticClass 0..9
    depth_m: np.ndarray               # (96, 288) float32 metres
    hdmap: np.ndarray                 # (256, 256) uint8 ChauffeurNet ids 0..8
    radar: dict[str, np.ndarray]      # radar1..radar4 -> (n, 4) [x, y, z, v] in this variant's ego frame


@dataclass(frozen=True, kw_only=True)
class FrameInputs:
    """Everything one sample is built from; geometry shared by both variants is in the true ego frame."""

    route_id: str                     # "<Scenario>/<route_dir>"
    frame_idx: int
    meta: dict[str, Any]              # metas/NNNN.pkl
    boxes: list[dict[str, Any]]       # bboxes/NNNN.pkl
    lidar: np.ndarray                 # (N, 4) float32 [x, y, z, time], true ego frame
    normal: SensorInputs
    perturbated: SensorInputs
    route_dir: Path = field(default=Path("."))  # only used to name files in error messages


def load_frame(route: Any, frame_idx: int) -> FrameInputs:
    """Read every raw file of one frame through a `sources.Route`.

    Raises:
        LeadFormatError: a file is missing or unreadable (raised by `sources`).
    """

    def sensors(perturbated: bool) -> SensorInputs:
        return SensorInputs(
            rgb_jpeg=route.rgb_jpeg(frame_idx, perturbated=perturbated),
            semantics=route.semantics(frame_idx, perturbated=perturbated),
            depth_m=route.depth_m(frame_idx, perturbated=perturbated),
            hdmap=route.hdmap(frame_idx, perturbated=perturbated),
            radar=route.radar(frame_idx, perturbated=perturbated),
        )

    return FrameInputs(
        route_id=route.route_id, frame_idx=frame_idx, meta=route.meta(frame_idx),
        boxes=route.boxes(frame_idx), lidar=route.lidar(frame_idx), normal=sensors(False),
        perturbated=sensors(True), route_dir=Path(route.path),
    )


def _file(inputs: FrameInputs, modality: str, perturbated: bool = False) -> Path:
    from lead_stream.layout import modality_path

    return modality_path(inputs.route_dir, modality, inputs.frame_idx, perturbated=perturbated)


def _check_array(inputs: FrameInputs, modality: str, perturbated: bool, array: np.ndarray,
                 shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise LeadFormatError(_file(inputs, modality, perturbated),
                              f"expected shape {shape}, found {array.shape}")


def depth_to_u8(depth_m: np.ndarray) -> np.ndarray:
    """Metres → uint8 with metres = v / 255 * 50 (clipped at 50 m, rounded)."""
    return np.round(np.clip(depth_m.astype(np.float64), 0.0,
                            DEPTH_MAX_M) / DEPTH_MAX_M * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# builders (E11): name = tar member name
# ---------------------------------------------------------------------------------------------------
class Frame:
    """Preprocessing view of one frame; per-variant values used by several members are computed once."""

    def __init__(self, inputs: FrameInputs) -> None:
        self.inputs = inputs
        self._memo: dict[tuple[str, bool], Any] = {}

    def perturbation(self, perturbated: bool) -> tuple[float, float]:
        """(translation_m, rotation_deg) of the variant; (0, 0) for the normal one."""
        if not perturbated:
            return 0.0, 0.0
        meta = self.inputs.meta
        return float(meta["perturbation_translation"]), float(meta["perturbation_rotation"])

    def sensors(self, perturbated: bool) -> SensorInputs:
        return self.inputs.perturbated if perturbated else self.inputs.normal

    def memo(self, name: str, perturbated: bool, compute: Callable[[], Any]) -> Any:
        key = (name, perturbated)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def boxes_px(self, perturbated: bool) -> np.ndarray:
        t, r = self.perturbation(perturbated)
        return self.memo("boxes", perturbated, lambda: box_labels(
            self.inputs.boxes, self.inputs.meta, translation_m=t, rotation_deg=r))


def _rgb(frame: Frame, perturbated: bool) -> bytes:
    payload = frame.sensors(perturbated).rgb_jpeg
    if payload[:2] != b"\xff\xd8":
        raise LeadFormatError(_file(frame.inputs, "rgb", perturbated), "not a JPEG (missing SOI marker)")
    return payload


def _lidar_bev(frame: Frame, perturbated: bool) -> np.ndarray:
    lidar = np.asarray(frame.inputs.lidar)
    if lidar.ndim != 2 or lidar.shape[1] < 3:
        raise LeadFormatError(_file(frame.inputs, "lidar"), f"expected (N, >=3) points, found {lidar.shape}")
    t, r = frame.perturbation(perturbated)
    return geometry.rasterize_lidar(geometry.perturb_points(lidar[:, :3], t, r))


def _semantic(frame: Frame, perturbated: bool) -> np.ndarray:
    semantics = np.asarray(frame.sensors(perturbated).semantics)
    _check_array(frame.inputs, "semantics", perturbated, semantics, (RGB_HEIGHT_PX, RGB_WIDTH_PX))
    return semantics.astype(np.uint8, copy=False)


def _depth(frame: Frame, perturbated: bool) -> np.ndarray:
    depth = np.asarray(frame.sensors(perturbated).depth_m)
    _check_array(frame.inputs, "depth", perturbated, depth, (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX))
    return depth_to_u8(depth)


def _bev_semantic(frame: Frame, perturbated: bool) -> np.ndarray:
    hdmap = np.asarray(frame.sensors(perturbated).hdmap)
    _check_array(frame.inputs, "hdmap", perturbated, hdmap, (HDMAP_SIZE_PX, HDMAP_SIZE_PX))
    try:
        hdmap_bev = hdmap_to_bev(hdmap)
    except ValueError as error:
        raise LeadFormatError(_file(frame.inputs, "hdmap", perturbated), str(error)) from None
    t, r = frame.perturbation(perturbated)
    occupancy = bev_occupancy(frame.inputs.boxes, frame.inputs.meta, translation_m=t, rotation_deg=r)
    return merge_bev_semantic(hdmap_bev, occupancy)


def _boxes(frame: Frame, perturbated: bool) -> np.ndarray:
    return frame.boxes_px(perturbated)


def _radar(frame: Frame, perturbated: bool) -> np.ndarray:
    radar = frame.sensors(perturbated).radar
    missing = [f"radar{i + 1}" for i in range(NUM_RADAR_SENSORS) if f"radar{i + 1}" not in radar]
    if missing:
        raise LeadFormatError(_file(frame.inputs, "radar", perturbated), f"missing arrays {missing}")
    return radar_points(radar)


def _radar_detections(frame: Frame, perturbated: bool) -> np.ndarray:
    return radar_detection_labels(frame.boxes_px(perturbated))


def _frame_targets(frame: Frame) -> dict[str, Any]:
    """`sample_targets` of the frame, computed once for both variants and targets.json."""
    def compute() -> dict[str, Any]:
        try:
            return sample_targets(frame.inputs.meta)
        except ValueError as error:
            raise LeadFormatError(_file(frame.inputs, "metas"), str(error)) from None

    return frame.memo("targets", False, compute)


def _targets(frame: Frame, perturbated: bool) -> dict[str, Any]:
    """targets.json: the variant-independent part of `sample_targets` (no per-variant geometry)."""
    return {name: value for name, value in _frame_targets(frame).items() if name not in ("normal", "perturbated")}


def _planning(name: str) -> Callable[[Frame, bool], np.ndarray]:
    def compute(frame: Frame, perturbated: bool) -> np.ndarray:
        geo = _frame_targets(frame)["perturbated" if perturbated else "normal"]
        return np.asarray(geo[name], dtype=np.float32)

    return compute


@dataclass(frozen=True)
class ArraySpec:
    """One array of a variant's `arrays[_pert].lz4` container."""

    name: str                                       # array name inside the container
    compute: Callable[[Frame, bool], np.ndarray]    # (frame, perturbated) -> array
    filter: str = "none"                            # codecs filter: none | transpose | nibble
    source: str = "metas"                           # raw file named when a key is missing


# Shapes / dtypes (n = rows actually present, never padded):
ARRAY_SPECS: tuple[ArraySpec, ...] = (
    ArraySpec("lidar_bev", _lidar_bev, "nibble", "lidar"),        # (320, 384) uint8 counts 0..5 (loader / 5)
    ArraySpec("semantic", _semantic, "nibble", "semantics"),       # (384, 1152) uint8 SemanticClass 0..9
    ArraySpec("depth", _depth, "transpose", "depth"),              # (96, 288) uint8, metres = v / 255 * 50
    ArraySpec("bev_semantic", _bev_semantic, "nibble", "bboxes"),  # (320, 384) uint8 BevSemanticClass 0..12
    ArraySpec("boxes", _boxes, "none", "bboxes"),                  # (n, 9) float32 BoxField, BEV px, n <= 90
    ArraySpec("radar", _radar, "transpose+shuffle", "radar"),      # (n, 5) float16 [x, y, z, v, sensor 0..3]
    ArraySpec("radar_detections", _radar_detections, "none", "bboxes"),  # (20, 4) float32 [x, y, v, valid]
    ArraySpec("target_point", _planning("target_point"), "none"),                    # (2,) float32 m
    ArraySpec("target_point_previous", _planning("target_point_previous"), "none"),  # (2,) float32 m
    ArraySpec("target_point_next", _planning("target_point_next"), "none"),          # (2,) float32 m
    ArraySpec("future_waypoints", _planning("future_waypoints"), "none"),            # (8, 2) float32 m
    ArraySpec("future_yaws_rad", _planning("future_yaws_rad"), "none"),              # (8,) float32 rad
    ArraySpec("route", _planning("route"), "none"),                                  # (10, 2) float32 m
)
ARRAY_NAMES: tuple[str, ...] = tuple(spec.name for spec in ARRAY_SPECS)
ARRAY_FILTERS: dict[str, str] = {spec.name: spec.filter for spec in ARRAY_SPECS if spec.filter != "none"}
VARIANTS = ("normal", "perturbated")  # group names in arrays.lz4


def variant_arrays(frame: Frame, perturbated: bool) -> dict[str, np.ndarray]:
    """Every container array of one variant, in `ARRAY_SPECS` order.

    Raises:
        LeadFormatError: a raw file lacks a key the array needs (names the file).
    """
    out = {}
    for spec in ARRAY_SPECS:
        try:
            out[spec.name] = spec.compute(frame, perturbated)
        except KeyError as error:
            raise LeadFormatError(_file(frame.inputs, spec.source, perturbated),
                                  f"missing key {error} (needed for {spec.name})") from None
    return out


def sample_arrays(frame: Frame, perturbated: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """The arrays.lz4 content: {"normal": variant_arrays(normal), "perturbated": variant_arrays(perturbated)}."""
    return {variant: variant_arrays(frame, variant == "perturbated") for variant in VARIANTS}


def encode_json(value: dict[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces) so equal content gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class MemberBuilder:
    """One sample member: `compute(frame)` gives the value, `build(frame)` its encoded bytes."""

    name: str                                        # tar member name, e.g. "rgb_pert.jpg"
    compute_variant: Callable[[Frame, bool], Any]    # (frame, perturbated) -> bytes | dict
    perturbated: bool = False                        # which sensor variant the member holds (jpg only)

    @property
    def kind(self) -> str:
        """Codec from the last extension: jpg, lz4, npy or json."""
        return codecs.codec_of(self.name)

    def compute(self, frame: Frame) -> Any:
        """The decoded value of this member (what `decode_member` returns for its bytes)."""
        return self.compute_variant(frame, self.perturbated)

    def build(self, frame: Frame) -> bytes:
        """Encoded member bytes."""
        return encode_member(self.name, self.compute(frame))


def _both(stem: str, ext: str, compute: Callable[[Frame, bool], Any]) -> tuple[MemberBuilder, MemberBuilder]:
    return MemberBuilder(f"{stem}.{ext}", compute, False), MemberBuilder(f"{stem}_pert.{ext}", compute, True)


MEMBERS: tuple[MemberBuilder, ...] = tuple(sorted(
    _both("rgb", "jpg", _rgb)
    + (MemberBuilder("arrays.lz4", sample_arrays),)
    + (MemberBuilder("targets.json", _targets),),
    key=lambda m: m.name,
))
MEMBER_NAMES: tuple[str, ...] = tuple(m.name for m in MEMBERS)


def encode_lz4_hc(array: np.ndarray, *, level: int = LZ4_HC_LEVEL) -> bytes:
    """`codecs.encode_lz4` with lz4's high-compression block mode (same header and payload format)."""
    if level <= 0:
        return codecs.encode_lz4(array)
    array = np.ascontiguousarray(array)
    dtype = array.dtype.str.encode("ascii")
    header = struct.pack("<4sBB", codecs.LZ4_MAGIC, len(dtype), array.ndim) + dtype
    header += struct.pack(f"<{array.ndim}Q", *array.shape)
    return header + lz4.block.compress(array.tobytes(), mode="high_compression", compression=level,
                                       store_size=True)


def encode_member(name: str, value: Any) -> bytes:
    """Encode a member value by its extension (jpg values are already JPEG bytes and pass through)."""
    kind = codecs.codec_of(name)
    if kind == "jpg":
        return bytes(value)
    if kind == "json":
        return encode_json(value)
    if kind == "lz4" and isinstance(value, dict):
        return codecs.encode_arrays(value, filters=ARRAY_FILTERS, level=LZ4_HC_LEVEL)
    if kind == "lz4":
        return encode_lz4_hc(value)
    return codecs.encode(kind, value)


def decode_member(name: str, payload: bytes) -> Any:
    """Decode member bytes by extension: jpg → (H, W, 3) uint8, npy → array, json → dict, lz4 → array or,
    for an array container, {array name: array}."""
    kind = codecs.codec_of(name)
    if kind == "json":
        return json.loads(payload)
    return codecs.decode(kind, payload)


def build_sample(inputs: FrameInputs, *, members: tuple[MemberBuilder, ...] = MEMBERS) -> dict[str, bytes]:
    """Build every member of one sample.

    Returns:
        {member name: encoded bytes}, in member-name order.

    Raises:
        LeadFormatError: an input file is malformed (names the file: usually the meta or bboxes pickle).
    """
    frame = Frame(inputs)
    out: dict[str, bytes] = {}
    for member in members:
        try:
            out[member.name] = member.build(frame)
        except KeyError as error:
            raise LeadFormatError(_file(inputs, "metas"),
                                  f"missing key {error} (needed for {member.name})") from None
    return out
