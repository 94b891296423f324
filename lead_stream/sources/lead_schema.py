"""A LEAD meta dict → which of LEAD's two meta schemas wrote it, and the values whose place or meaning moved.

`LEGACY` is the schema of `autonomousvision/lead` 8bb1118 (our original contract); `CURRENT` the one of
`kesai-labs/lead` 4489176, whose metas carry `dataset_information` / `sensor_information`, hold raw GNSS in
`noisy_pos_global` (Kalman-filtered: `filtered_pos_global`), moved `target_dataset` into
`dataset_information`, dropped six traffic/road keys, keep <= 61 future/past entries, and label motorcycles
as vehicles. Each LEAD version rejects the other's metas; lead-stream reads both, each with its meaning.
"""

from __future__ import annotations

from typing import Any

from lead_stream.core.constants import META_KEYS_REMOVED_IN_CURRENT

LEGACY = "legacy"  # autonomousvision/lead 8bb1118
CURRENT = "current"  # kesai-labs/lead 4489176
LEAD_SCHEMAS = (LEGACY, CURRENT)
LEGACY_DEPTH_RESOLUTION_RATIO = 4  # 8bb1118 always saved depth at 1/4 resolution (96 x 288)
REMOVED_IN_CURRENT = META_KEYS_REMOVED_IN_CURRENT


def lead_schema_of(meta: dict[str, Any]) -> str:
    """`CURRENT` when the meta has `dataset_information` (what current LEAD requires), else `LEGACY`."""
    return CURRENT if isinstance(meta.get("dataset_information"), dict) else LEGACY


def dataset_information(meta: dict[str, Any]) -> dict[str, Any]:
    """The meta's `dataset_information` dict (empty for legacy metas)."""
    info = meta.get("dataset_information")
    return info if isinstance(info, dict) else {}


def depth_resolution_ratio(meta: dict[str, Any]) -> int:
    """Depth PNG downsampling factor: `dataset_information.save_depth_resolution_ratio`, else 4 (legacy).

    Raises:
        ValueError: the meta gives a ratio that is not a positive integer.
    """
    ratio = dataset_information(meta).get("save_depth_resolution_ratio", LEGACY_DEPTH_RESOLUTION_RATIO)
    if isinstance(ratio, bool) or not float(ratio).is_integer() or ratio < 1:
        raise ValueError(
            f"dataset_information.save_depth_resolution_ratio must be an integer >= 1, got {ratio!r}"
        )
    return int(ratio)


def target_dataset(meta: dict[str, Any]) -> Any:
    """LEAD's TargetDataset id: top-level in legacy metas, inside `dataset_information` in current ones."""
    return (
        meta["target_dataset"]
        if "target_dataset" in meta
        else dataset_information(meta).get("target_dataset")
    )


def filtered_gnss_position(meta: dict[str, Any]) -> Any:
    """The Kalman-filtered GNSS position: legacy `noisy_pos_global`, current `filtered_pos_global`."""
    return (
        meta.get("filtered_pos_global") if lead_schema_of(meta) == CURRENT else meta.get("noisy_pos_global")
    )


def raw_gnss_position(meta: dict[str, Any]) -> Any:
    """The raw GNSS position: current `noisy_pos_global`; legacy metas do not keep it (None)."""
    return meta.get("noisy_pos_global") if lead_schema_of(meta) == CURRENT else None
