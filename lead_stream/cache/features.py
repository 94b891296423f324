"""One LEAD frame → the named, encoded members of one sample (both sensor variants).

Input: a `frame.FrameInputs` (raw arrays of one frame, read by `frame.load_frame` from a `sources.Route`,
or made by hand in tests). Output: `build_sample(inputs) -> {member name: bytes}`, one entry per `MEMBERS` builder;
the builder name is the tar member name. A sample has three members:

    rgb.jpg, rgb_pert.jpg   original JPEG bytes (no re-encode) → (384, 1152, 3) uint8
    arrays.lz4              one `container.encode_arrays` container: groups "normal" and "perturbated"
                            (`VARIANTS`), each holding that sensor variant's arrays (`STORED_SPECS`) in its own
                            block, so a reader decompresses only the variant it serves, and a group "targets"
                            whose attrs are the variant-independent scalars (speed, controls, commands,
                            planning_valid, the route's perturbation)

One container instead of one member per array (and the targets inside it) saves ~13 KB of tar headers and
padding per sample and lets the loader decode a variant's arrays with one zstd and one lz4 call. The
rasters `lidar_bev`, `semantic` and `bev_semantic` are stored run-length coded (`runs`: `<name>_values` uint8,
`<name>_lengths` uint8 and `<name>_long` uint16, byte-shuffled): smaller than lz4 over the raster, and the loader ships the runs to
the trainer, which expands them on the device. `decode_member("arrays.lz4", payload)` gives the dense view
{"normal": {array name: array}, "perturbated": {...}, "targets": {...}}; plain webdataset yields the bytes and
`lead_stream.core.codecs.decode("lz4", payload)` the stored arrays. Semantics follow LEAD's `CARLAData` (LEAD_FORMAT
§4.1 steps 5, 7, 9, 10; §4.3; §4.4). The one non-obvious rule: the perturbated variant reads the
`*_perturbated` images/semantics/depth/hdmap/radar files but TRANSFORMS the shared LiDAR, boxes, target
points, waypoints, route and yaws with p' = R(r)^T (p - [0, t]), psi' = wrap(psi - r) (r in degrees).

Label arrays come from `labels` (boxes, BEV occupancy/semantics, radar) and ego targets from `targets`;
this module reads the frame, checks raw shapes, names each array and member, and encodes them.

Differences from LEAD, on purpose (more in `labels` and `targets`):
* LiDAR BEV is stored as uint8 counts 0..5 (LEAD: float counts / 5);
* per-box waypoint counts are uint8 (LEAD: int32); nothing is padded to 90 boxes.
Depth is re-quantised as LEAD's cache does (`frame.depth_to_u8`, truncating), occupancy drawn as LEAD draws it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lz4.block
import numpy as np

from lead_stream.cache.frame import Frame, FrameInputs, check_array, depth_to_u8, source_file
from lead_stream.cache.labels import (
    bev_occupancy,
    hdmap_to_bev,
    merge_bev_semantic,
    radar_detection_labels,
    radar_points,
)
from lead_stream.cache.targets import sample_targets
from lead_stream.core import codecs, container, geometry, runs
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    DEPTH_HEIGHT_PX,
    DEPTH_WIDTH_PX,
    HDMAP_SIZE_PX,
    NUM_RADAR_SENSORS,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
)
from lead_stream.core.errors import LeadFormatError

LIDAR_USED_STEPS = 10  # LEAD's training_used_lidar_steps: points whose `time` (tick age) is below this count

# Bump when preprocessing output changes in a way the source hash of this file would not show
# (e.g. a change in constants.py or geometry.py); part of every pipeline id.
# 2: one `arrays.lz4` container (was one member per array), radar float16, per-variant targets in it.
# 3: container LSC2 (dims outside the table), lidar_bev/semantic/bev_semantic run-length coded, targets.json folded
#    into arrays.lz4 (group "targets"), per-variant "ego" vector.
# 4: zstd (was deflate) as the container's outer codec: smaller, and decoded in less than half the time.
# 5: LEAD-exact labels (occupancy on LEAD's 1024 grid with OpenCV's fill rules, float64 LiDAR binned as
#    np.histogramdd, LEAD's depth re-encoding, motorcycles by the meta's LEAD schema).
PREPROCESS_VERSION = 5
# First lz4 pass of the array container in high-compression mode at this level (0 = fast mode). Decoding
# speed does not depend on it; higher levels save a few more bytes for more build time.
LZ4_HC_LEVEL = 4


def _rgb(frame: Frame, perturbated: bool) -> bytes:
    """The original JPEG bytes, stored only if they decode in full (a damaged image never reaches the cache)."""
    payload = frame.sensors(perturbated).rgb_jpeg
    problem = codecs.jpeg_problem(payload, (RGB_HEIGHT_PX, RGB_WIDTH_PX))
    if problem is not None:
        raise LeadFormatError(source_file(frame.inputs, "rgb", perturbated), problem)
    return payload


def _lidar_bev(frame: Frame, perturbated: bool) -> np.ndarray:
    """LEAD's LiDAR BEV: points with time < 10 (training_used_lidar_steps), moved by `align_lidar`, binned."""
    lidar = np.asarray(frame.inputs.lidar)
    if lidar.ndim != 2 or lidar.shape[1] < 3:
        raise LeadFormatError(
            source_file(frame.inputs, "lidar"), f"expected (N, >=3) points, found {lidar.shape}"
        )
    if lidar.shape[1] >= 4:
        used = lidar[:, 3] < LIDAR_USED_STEPS
        if not used.all():
            lidar = lidar[used]
    t, r = frame.perturbation(perturbated)
    return geometry.rasterize_lidar(geometry.align_lidar(lidar[:, :3], t, r))


def _semantic(frame: Frame, perturbated: bool) -> np.ndarray:
    semantics = np.asarray(frame.sensors(perturbated).semantics)
    check_array(frame.inputs, "semantics", perturbated, semantics, (RGB_HEIGHT_PX, RGB_WIDTH_PX))
    return semantics.astype(np.uint8, copy=False)


def _depth(frame: Frame, perturbated: bool) -> np.ndarray:
    depth = np.asarray(frame.sensors(perturbated).depth_m)
    check_array(frame.inputs, "depth", perturbated, depth, (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX))
    return depth_to_u8(depth)


def _bev_semantic(frame: Frame, perturbated: bool) -> np.ndarray:
    hdmap = np.asarray(frame.sensors(perturbated).hdmap)
    check_array(frame.inputs, "hdmap", perturbated, hdmap, (HDMAP_SIZE_PX, HDMAP_SIZE_PX))
    try:
        hdmap_bev = hdmap_to_bev(hdmap)
    except ValueError as error:
        raise LeadFormatError(source_file(frame.inputs, "hdmap", perturbated), str(error)) from None
    t, r = frame.perturbation(perturbated)
    occupancy = bev_occupancy(frame.inputs.boxes, frame.inputs.meta, translation_m=t, rotation_deg=r)
    return merge_bev_semantic(hdmap_bev, occupancy)


def _boxes(frame: Frame, perturbated: bool) -> np.ndarray:
    return frame.boxes_px(perturbated)


def _box_waypoints(frame: Frame, perturbated: bool) -> np.ndarray:
    return frame.box_waypoints(perturbated)[0]


def _box_num_waypoints(frame: Frame, perturbated: bool) -> np.ndarray:
    return frame.box_waypoints(perturbated)[1]


def _radar(frame: Frame, perturbated: bool) -> np.ndarray:
    radar = frame.sensors(perturbated).radar
    missing = [f"radar{i + 1}" for i in range(NUM_RADAR_SENSORS) if f"radar{i + 1}" not in radar]
    if missing:
        raise LeadFormatError(source_file(frame.inputs, "radar", perturbated), f"missing arrays {missing}")
    return radar_points(radar)


def _radar_detections(frame: Frame, perturbated: bool) -> np.ndarray:
    return radar_detection_labels(frame.boxes_px(perturbated))


def _frame_targets(frame: Frame) -> dict[str, Any]:
    """`sample_targets` of the frame, computed once for both variants and the "targets" group."""

    def compute() -> dict[str, Any]:
        try:
            return sample_targets(frame.inputs.meta)
        except ValueError as error:
            raise LeadFormatError(source_file(frame.inputs, "metas"), str(error)) from None

    return frame.memo("targets", False, compute)


def _targets(frame: Frame, perturbated: bool = False) -> dict[str, Any]:
    """The "targets" attrs: the variant-independent part of `sample_targets` (no per-variant geometry)."""
    return {
        name: value for name, value in _frame_targets(frame).items() if name not in ("normal", "perturbated")
    }


def _ego(frame: Frame, perturbated: bool) -> np.ndarray:
    """(6,) float32 `EGO_FIELDS`: the scalars the loader needs, so it never parses the targets JSON."""
    targets = _frame_targets(frame)
    return np.array([float(targets[name]) for name in EGO_FIELDS], dtype=np.float32)


def _planning(name: str) -> Callable[[Frame, bool], np.ndarray]:
    def compute(frame: Frame, perturbated: bool) -> np.ndarray:
        geo = _frame_targets(frame)["perturbated" if perturbated else "normal"]
        return np.asarray(geo[name], dtype=np.float32)

    return compute


# "ego" array of each variant group: float32 values of these targets (command ids and flags as floats)
EGO_FIELDS = ("speed_mps", "target_speed_mps", "command", "next_command", "brake", "planning_valid")


@dataclass(frozen=True)
class ArraySpec:
    """One array of a variant's group in arrays.lz4 (the dense value; `RUN_CODED` ones are stored as runs)."""

    name: str  # array name (decoded view)
    compute: Callable[[Frame, bool], np.ndarray]  # (frame, perturbated) -> array
    filter: str = "none"  # codecs filter: none | transpose | nibble | ...
    source: str = "metas"  # raw file named when a key is missing


# Shapes / dtypes (n = rows actually present, never padded):
ARRAY_SPECS: tuple[ArraySpec, ...] = (
    ArraySpec("lidar_bev", _lidar_bev, "none", "lidar"),  # (320, 384) uint8 counts 0..5 (loader / 5), runs
    ArraySpec("semantic", _semantic, "none", "semantics"),  # (384, 1152) uint8 SemanticClass 0..9, runs
    ArraySpec("depth", _depth, "transpose", "depth"),  # (96, 288) uint8, metres = v / 255 * 50
    ArraySpec(
        "bev_semantic", _bev_semantic, "none", "bboxes"
    ),  # (320, 384) uint8 BevSemanticClass 0..12, runs
    ArraySpec("boxes", _boxes, "none", "bboxes"),  # (n, 9) float32 BoxField, BEV px, n <= 90
    ArraySpec(
        "box_waypoints", _box_waypoints, "shuffle", "bboxes"
    ),  # (n, 8, 2) float32 m, per box of `boxes`
    ArraySpec(
        "box_num_waypoints", _box_num_waypoints, "none", "bboxes"
    ),  # (n,) uint8 real (not extrapolated)
    ArraySpec("radar", _radar, "transpose+shuffle", "radar"),  # (n, 5) float16 [x, y, z, v, sensor 0..3]
    ArraySpec("radar_detections", _radar_detections, "none", "bboxes"),  # (20, 4) float32 [x, y, v, valid]
    ArraySpec("target_point", _planning("target_point"), "none"),  # (2,) float32 m
    ArraySpec("target_point_previous", _planning("target_point_previous"), "none"),  # (2,) float32 m
    ArraySpec("target_point_next", _planning("target_point_next"), "none"),  # (2,) float32 m
    ArraySpec("future_waypoints", _planning("future_waypoints"), "none"),  # (8, 2) float32 m
    ArraySpec("future_yaws_rad", _planning("future_yaws_rad"), "none"),  # (8,) float32 rad
    ArraySpec("route", _planning("route"), "none"),  # (10, 2) float32 m
    ArraySpec("ego", _ego, "none"),  # (6,) float32 EGO_FIELDS
)
ARRAY_NAMES: tuple[str, ...] = tuple(spec.name for spec in ARRAY_SPECS)
# stored as <name>_values + <name>_lengths (`runs`): label rasters are large regions of one class, and the LiDAR
# histogram is mostly empty (LEAD removes ground points before rasterising)
RUN_CODED: tuple[str, ...] = ("lidar_bev", "semantic", "bev_semantic")
VARIANTS = ("normal", "perturbated")  # array groups in arrays.lz4
TARGETS_GROUP = "targets"  # attrs-only group in arrays.lz4


def _stored_specs() -> tuple[tuple[str, str, bool], ...]:
    """(stored name, filter, variable first dim) in storage order: fixed-size arrays first, then variable."""
    specs = {spec.name: spec for spec in ARRAY_SPECS}
    rows = ("boxes", "box_waypoints", "box_num_waypoints", "radar")  # first dimension varies per sample
    fixed = [(s.name, s.filter, False) for s in ARRAY_SPECS if s.name not in RUN_CODED and s.name not in rows]
    variable = [(name, specs[name].filter, True) for name in rows]
    for name in RUN_CODED:
        variable += [
            (f"{name}_values", "none", True),
            (f"{name}_lengths", "none", True),
            (f"{name}_long", "shuffle", True),
        ]
    return tuple(fixed + variable)


STORED_SPECS = _stored_specs()
STORED_FILTERS: dict[str, str] = {name: f for name, f, _ in STORED_SPECS if f != "none"}
STORED_VARIABLE: frozenset[str] = frozenset(name for name, _, variable in STORED_SPECS if variable)
# the runs go after the lz4 block, compressed by the outer codec (zstd) alone: lz4 cannot shrink them, and its
# framing costs bytes
STORED_UNPACKED: frozenset[str] = frozenset(
    f"{name}_{part}" for name in RUN_CODED for part in ("values", "lengths", "long")
)
RASTER_SHAPES: dict[str, tuple[int, int]] = {
    "lidar_bev": (BEV_HEIGHT_PX, BEV_WIDTH_PX),
    "semantic": (RGB_HEIGHT_PX, RGB_WIDTH_PX),
    "bev_semantic": (BEV_HEIGHT_PX, BEV_WIDTH_PX),
}


def variant_arrays(frame: Frame, perturbated: bool) -> dict[str, np.ndarray]:
    """Every array of one variant (dense rasters), in `ARRAY_SPECS` order.

    Raises:
        LeadFormatError: a raw file lacks a key the array needs (names the file).
    """
    out = {}
    for spec in ARRAY_SPECS:
        try:
            out[spec.name] = spec.compute(frame, perturbated)
        except KeyError as error:
            raise LeadFormatError(
                source_file(frame.inputs, spec.source, perturbated),
                f"missing key {error} (needed for {spec.name})",
            ) from None
    return out


def stored_arrays(dense: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A variant's dense arrays → the arrays its group stores, in `STORED_SPECS` order (label rasters as runs)."""
    out = dict(dense)
    for name in RUN_CODED:
        values, lengths = runs.encode_runs(out.pop(name))
        out[f"{name}_values"] = values
        out[f"{name}_lengths"], out[f"{name}_long"] = runs.split_lengths(lengths)
    return {name: out[name] for name, _, _ in STORED_SPECS}


def dense_arrays(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of `stored_arrays` (runs expanded), in `ARRAY_SPECS` order.

    Raises:
        ValueError: runs that do not cover their raster exactly.
    """
    out = dict(stored)
    for name in RUN_CODED:
        lengths = runs.join_lengths(out.pop(f"{name}_lengths"), out.pop(f"{name}_long"))
        out[name] = runs.expand_runs(out.pop(f"{name}_values"), lengths, RASTER_SHAPES[name])
    return {name: out[name] for name in ARRAY_NAMES}


def sample_arrays(frame: Frame, perturbated: bool = False) -> dict[str, Any]:
    """The dense arrays.lz4 content: {"normal": arrays, "perturbated": arrays, "targets": scalars dict}."""
    value: dict[str, Any] = {variant: variant_arrays(frame, variant == "perturbated") for variant in VARIANTS}
    value[TARGETS_GROUP] = _targets(frame)
    return value


def encode_sample_arrays(value: dict[str, Any], *, level: int = LZ4_HC_LEVEL) -> bytes:
    """`sample_arrays` content → the arrays.lz4 bytes (`codecs` LSC2 container)."""
    groups = {variant: stored_arrays(value[variant]) for variant in VARIANTS}
    groups[TARGETS_GROUP] = {}
    return container.encode_arrays(
        groups,
        filters=STORED_FILTERS,
        variable=STORED_VARIABLE,
        unpacked=STORED_UNPACKED,
        attrs={TARGETS_GROUP: value[TARGETS_GROUP]},
        level=level,
    )


def decode_sample_arrays(payload: bytes | memoryview) -> dict[str, Any]:
    """Inverse of `encode_sample_arrays`: dense arrays per variant plus the targets dict."""
    value: dict[str, Any] = {
        variant: dense_arrays(container.decode_group(payload, variant)) for variant in VARIANTS
    }
    value[TARGETS_GROUP] = container.decode_attrs(payload, TARGETS_GROUP)
    return value


def encode_json(value: dict[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces) so equal content gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class MemberBuilder:
    """One sample member: `compute(frame)` gives the value, `build(frame)` its encoded bytes."""

    name: str  # tar member name, e.g. "rgb_pert.jpg"
    compute_variant: Callable[[Frame, bool], Any]  # (frame, perturbated) -> bytes | dict
    perturbated: bool = False  # which sensor variant the member holds (jpg only)

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


MEMBERS: tuple[MemberBuilder, ...] = tuple(
    sorted(
        _both("rgb", "jpg", _rgb) + (MemberBuilder("arrays.lz4", sample_arrays),),
        key=lambda m: m.name,
    )
)
MEMBER_NAMES: tuple[str, ...] = tuple(m.name for m in MEMBERS)


def encode_lz4_hc(array: np.ndarray, *, level: int = LZ4_HC_LEVEL) -> bytes:
    """`codecs.encode_lz4` with lz4's high-compression block mode (same header and payload format)."""
    if level <= 0:
        return codecs.encode_lz4(array)
    array = np.ascontiguousarray(array)
    dtype = array.dtype.str.encode("ascii")
    header = struct.pack("<4sBB", codecs.LZ4_MAGIC, len(dtype), array.ndim) + dtype
    header += struct.pack(f"<{array.ndim}Q", *array.shape)
    return header + lz4.block.compress(
        array.tobytes(), mode="high_compression", compression=level, store_size=True
    )


def encode_member(name: str, value: Any) -> bytes:
    """Encode a member value by its extension (jpg values are already JPEG bytes and pass through)."""
    kind = codecs.codec_of(name)
    if kind == "jpg":
        return bytes(value)
    if kind == "json":
        return encode_json(value)
    if kind == "lz4" and isinstance(value, dict):
        return encode_sample_arrays(value)
    if kind == "lz4":
        return encode_lz4_hc(value)
    return codecs.encode(kind, value)


def decode_member(name: str, payload: bytes) -> Any:
    """Decode member bytes by extension: jpg → (H, W, 3) uint8, npy → array, json → dict, lz4 → array or,
    for the sample's array container, the dense `sample_arrays` view."""
    kind = codecs.codec_of(name)
    if kind == "json":
        return json.loads(payload)
    if kind == "lz4" and bytes(payload[:4]) == container.ARRAYS_MAGIC:
        return decode_sample_arrays(payload)
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
            raise LeadFormatError(
                source_file(inputs, "metas"), f"missing key {error} (needed for {member.name})"
            ) from None
    return out
