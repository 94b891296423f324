"""One LEAD frame's raw files → `FrameInputs` (what a sample is built from) and the `Frame` view that the
member builders share (per-variant values computed once).

`load_frame(route, frame_idx)` reads every file of the frame through a `sources.Route`; tests build
`FrameInputs` by hand. Geometry shared by both variants stays in the true ego frame here; the perturbated
variant's transform is applied by the builders (`features`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lead_stream.cache.labels import box_labels_and_sources, box_waypoints
from lead_stream.core.constants import DEPTH_MAX_M
from lead_stream.core.errors import LeadFormatError
from lead_stream.core.layout import frame_filename, modality_path
from lead_stream.sources.lead_schema import depth_resolution_ratio


@dataclass(frozen=True, kw_only=True)
class SensorInputs:
    """The per-variant raw sensors of one frame (normal files or `*_perturbated` files)."""

    rgb_jpeg: bytes  # original JPEG file bytes, 384 x 1152 x 3
    semantics: np.ndarray  # (384, 1152) uint8, SemanticClass 0..9
    depth_m: np.ndarray  # (96, 288) float32 metres
    hdmap: np.ndarray  # (256, 256) uint8 ChauffeurNet ids 0..8
    radar: dict[str, np.ndarray]  # radar1..radar4 -> (n, 4) [x, y, z, v] in this variant's ego frame


@dataclass(frozen=True, kw_only=True)
class FrameInputs:
    """Everything one sample is built from; geometry shared by both variants is in the true ego frame."""

    route_id: str  # "<Scenario>/<route_dir>"
    frame_idx: int
    meta: dict[str, Any]  # metas/NNNN.pkl
    boxes: list[dict[str, Any]]  # bboxes/NNNN.pkl
    lidar: np.ndarray  # (N, 4) float32 [x, y, z, time], true ego frame
    normal: SensorInputs
    perturbated: SensorInputs
    route_dir: Path | str = field(default=Path("."))  # names files in error messages (a URL stays a str)


def load_frame(route: Any, frame_idx: int) -> FrameInputs:
    """Read every raw file of one frame through a `sources.Route` (a folder or a zip, alike).

    Depth is read at the meta's `save_depth_resolution_ratio` (current LEAD schema; legacy: 4) and, when that
    is not 4, area-resampled to the 96 x 288 the cache stores (LEAD would upsample it by its own ratio).

    Raises:
        LeadFormatError: a file is missing or unreadable (raised by `sources`).
    """
    meta = route.meta(frame_idx)
    try:
        ratio = depth_resolution_ratio(meta)
    except ValueError as error:
        raise LeadFormatError(route.store.path_of(f"metas/{frame_idx:04d}.pkl"), str(error)) from None

    def sensors(perturbated: bool) -> SensorInputs:
        depth = route.depth_m(frame_idx, perturbated=perturbated, resolution_ratio=ratio)
        return SensorInputs(
            rgb_jpeg=route.rgb_jpeg(frame_idx, perturbated=perturbated),
            semantics=route.semantics(frame_idx, perturbated=perturbated),
            depth_m=depth if ratio == STORED_DEPTH_RATIO else _area_resample(depth, ratio),
            hdmap=route.hdmap(frame_idx, perturbated=perturbated),
            radar=route.radar(frame_idx, perturbated=perturbated),
        )

    return FrameInputs(
        route_id=route.route_id,
        frame_idx=frame_idx,
        meta=meta,
        boxes=route.boxes(frame_idx),
        lidar=route.lidar(frame_idx),
        normal=sensors(False),
        perturbated=sensors(True),
        route_dir=route.path,
    )


STORED_DEPTH_RATIO = 4  # the cache stores depth at 1/4 of the camera resolution (96 x 288)


def _area_resample(depth_m: np.ndarray, ratio: int) -> np.ndarray:
    """(384/ratio, 1152/ratio) float32 depth → (96, 288) by block means (ratio 1 or 2) or pixel repeats (8)."""
    if STORED_DEPTH_RATIO % ratio == 0:
        k = STORED_DEPTH_RATIO // ratio
        h, w = depth_m.shape
        return depth_m.reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    k = ratio // STORED_DEPTH_RATIO
    return np.repeat(np.repeat(depth_m, k, axis=0), k, axis=1)


def source_file(inputs: FrameInputs, modality: str, perturbated: bool = False) -> Path | str:
    """The raw file of `modality` this frame was read from (named in error messages)."""
    if isinstance(inputs.route_dir, str) and "://" in inputs.route_dir:
        folder = modality + ("_perturbated" if perturbated else "")
        return f"{inputs.route_dir.rstrip('/')}/{folder}/{frame_filename(modality, inputs.frame_idx)}"
    return modality_path(inputs.route_dir, modality, inputs.frame_idx, perturbated=perturbated)


def check_array(
    inputs: FrameInputs, modality: str, perturbated: bool, array: np.ndarray, shape: tuple[int, ...]
) -> None:
    """Raise `LeadFormatError` naming the raw file when `array` does not have `shape`."""
    if array.shape != shape:
        raise LeadFormatError(
            source_file(inputs, modality, perturbated), f"expected shape {shape}, found {array.shape}"
        )


def depth_to_u8(depth_m: np.ndarray) -> np.ndarray:
    """Metres → uint8, LEAD's `encode_depth_8bit` exactly: float32 (clip(d, 0, 50) / 50) * 255, truncated.

    As in LEAD's cache, a depth PNG decoded and encoded again loses one level on 19 of the 256 values
    (v / 255 * 50 / 50 * 255 lands just below v in float32).
    """
    depth = np.clip(np.asarray(depth_m, dtype=np.float32), np.float32(0.0), np.float32(DEPTH_MAX_M))
    return ((depth / np.float32(DEPTH_MAX_M)) * np.float32(255.0)).astype(np.uint8)


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
        return self._boxes_and_sources(perturbated)[0]

    def box_waypoints(self, perturbated: bool) -> tuple[np.ndarray, np.ndarray]:
        """(n, 8, 2) float32 future waypoints of the kept boxes and (n,) uint8 counts of real ones."""
        t, r = self.perturbation(perturbated)
        sources = self._boxes_and_sources(perturbated)[1]
        return self.memo(
            "box_waypoints",
            perturbated,
            lambda: box_waypoints(self.inputs.boxes, sources, translation_m=t, rotation_deg=r),
        )

    def _boxes_and_sources(self, perturbated: bool) -> tuple[np.ndarray, list[int]]:
        t, r = self.perturbation(perturbated)
        return self.memo(
            "boxes",
            perturbated,
            lambda: box_labels_and_sources(
                self.inputs.boxes, self.inputs.meta, translation_m=t, rotation_deg=r
            ),
        )
