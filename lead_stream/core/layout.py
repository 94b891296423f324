"""LEAD's on-disk naming as pure path functions: data root → routes → modality folders → `NNNN.<ext>`.

Nothing here touches the file system. A route is `<data_root>/data/<Scenario>/<route_dir>/`; its
`route_id` is `"<Scenario>/<route_dir>"` (forward slashes). Frame files are 4-digit zero-padded
(`f"{frame_idx:04d}"`); perturbated variants live in `<modality>_perturbated/` with the same names.
"""

from __future__ import annotations

from pathlib import Path

ROUTES_DIRNAME = "data"  # <data_root>/data/<Scenario>/<route_dir>
RESULTS_FILENAME = "results.json"  # per-route leaderboard record (LEAD_FORMAT §1.9)
PERTURBATED_SUFFIX = "_perturbated"

# modality folder name -> file extension (LEAD_FORMAT §1.4)
MODALITY_EXT: dict[str, str] = {
    "rgb": "jpg",
    "semantics": "png",
    "depth": "png",
    "hdmap": "png",
    "lidar": "laz",
    "radar": "npz",
    "bboxes": "pkl",
    "metas": "pkl",
}
# modalities that LEAD also writes for the perturbated (recovery) sensor rig
PERTURBATED_MODALITIES: tuple[str, ...] = ("rgb", "semantics", "depth", "hdmap", "radar")


def routes_root(data_root: Path | str) -> Path:
    """`<data_root>/data`, the folder holding `<Scenario>/<route_dir>/`."""
    return Path(data_root) / ROUTES_DIRNAME


def route_path(data_root: Path | str, route_id: str) -> Path:
    """Directory of route `route_id` (`"<Scenario>/<route_dir>"`)."""
    return routes_root(data_root).joinpath(*route_id.split("/"))


def route_id_of(data_root: Path | str, route_dir: Path | str) -> str:
    """Inverse of `route_path`: `"<Scenario>/<route_dir>"` for a route directory below `data_root`."""
    return Path(route_dir).relative_to(routes_root(data_root)).as_posix()


def frame_filename(modality: str, frame_idx: int) -> str:
    """`NNNN.<ext>` for `modality` (e.g. `frame_filename("rgb", 7) == "0007.jpg"`)."""
    return f"{frame_idx:04d}.{MODALITY_EXT[modality]}"


def modality_dir(route_dir: Path | str, modality: str, *, perturbated: bool = False) -> Path:
    """`<route_dir>/<modality>` or `<route_dir>/<modality>_perturbated`.

    Raises:
        KeyError: unknown modality, or `perturbated=True` for a modality LEAD stores once (lidar, bboxes,
            metas).
    """
    if modality not in MODALITY_EXT:
        raise KeyError(f"unknown modality {modality!r}; known: {sorted(MODALITY_EXT)}")
    if perturbated and modality not in PERTURBATED_MODALITIES:
        raise KeyError(
            f"modality {modality!r} has no perturbated variant; those are {PERTURBATED_MODALITIES}"
        )
    name = modality + PERTURBATED_SUFFIX if perturbated else modality
    return Path(route_dir) / name


def modality_path(route_dir: Path | str, modality: str, frame_idx: int, *, perturbated: bool = False) -> Path:
    """`<route_dir>/<modality>[_perturbated]/NNNN.<ext>` of one frame."""
    return modality_dir(route_dir, modality, perturbated=perturbated) / frame_filename(modality, frame_idx)


def results_path(route_dir: Path | str) -> Path:
    """`<route_dir>/results.json`."""
    return Path(route_dir) / RESULTS_FILENAME


def all_modality_dirnames() -> tuple[str, ...]:
    """Every modality folder name a route may hold, normal then perturbated."""
    return tuple(MODALITY_EXT) + tuple(m + PERTURBATED_SUFFIX for m in PERTURBATED_MODALITIES)


def relative_path(path: Path | str, data_root: Path | str) -> str:
    """`path` relative to `data_root` as a POSIX string (how tables and messages name raw files), else as given
    (URLs always)."""
    if isinstance(path, str) and "://" in path:
        return path
    try:
        return Path(path).resolve().relative_to(Path(data_root).resolve()).as_posix()
    except ValueError:
        return str(path)
