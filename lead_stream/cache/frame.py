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
from lead_stream.core.layout import modality_path


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
        route_id=route.route_id,
        frame_idx=frame_idx,
        meta=route.meta(frame_idx),
        boxes=route.boxes(frame_idx),
        lidar=route.lidar(frame_idx),
        normal=sensors(False),
        perturbated=sensors(True),
        route_dir=Path(route.path),
    )


def source_file(inputs: FrameInputs, modality: str, perturbated: bool = False) -> Path:
    """The raw file of `modality` this frame was read from (named in error messages)."""
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
    """Metres → uint8 with metres = v / 255 * 50 (clipped at 50 m, rounded)."""
    return np.round(np.clip(depth_m.astype(np.float64), 0.0, DEPTH_MAX_M) / DEPTH_MAX_M * 255.0).astype(
        np.uint8
    )


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
