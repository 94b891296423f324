"""Extracted routes → LEAD's released layout: one zip per route at `<data_root>/zip/<Scenario>/<route>.zip`.

The model-hub dataset (`ln2697/lead_carla`) ships `<Scenario>/<route>.zip`; `scripts/download_one_route.sh`
puts it in `data/carla_leaderboard2/zip/`, and `scripts/unzip_routes.sh` extracts it from the repository
root (`unzip -o ZIP -d .`), so its members start at `data/carla_leaderboard2/data/<Scenario>/<route>/`
(`MEMBER_ROOT`). `zip_routes` writes such zips like `zip -r` (folder entries, then files, deflate level 6),
byte-reproducibly (fixed timestamps, sorted members), each written to a temp name and renamed.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from lead_stream.core import layout
from lead_stream.core.atomic import atomic_path

ZIP_DIRNAME = "zip"  # <data_root>/zip/<Scenario>/<route>.zip
MEMBER_ROOT = "data/carla_leaderboard2/data"  # members: <MEMBER_ROOT>/<Scenario>/<route>/...
ZIP_DATE_TIME = (2024, 1, 1, 0, 0, 0)  # every member's timestamp (reproducible bytes)
DEFLATE_LEVEL = 6  # zip's default


def zip_path(data_root: Path | str, route_id: str) -> Path:
    """`<data_root>/zip/<Scenario>/<route_dir>.zip`."""
    scenario, route_dir = route_id.split("/")
    return Path(data_root) / ZIP_DIRNAME / scenario / f"{route_dir}.zip"


def zip_route(data_root: Path | str, route_id: str, *, member_root: str = MEMBER_ROOT) -> Path:
    """Zip one extracted route into the released layout (see module doc); returns the zip's path."""
    route_dir = layout.route_path(data_root, route_id)
    prefix = f"{member_root.strip('/')}/{route_id}/" if member_root else f"{route_id}/"
    target = zip_path(data_root, route_id)
    entries: list[tuple[str, Path | None]] = []
    parts = prefix.rstrip("/").split("/")
    entries += [("/".join(parts[: i + 1]) + "/", None) for i in range(len(parts))]
    for folder, dirnames, filenames in os.walk(route_dir):
        dirnames.sort()
        rel = Path(folder).relative_to(route_dir).as_posix()
        base = prefix if rel == "." else f"{prefix}{rel}/"
        if rel != ".":
            entries.append((base, None))
        entries += [(base + name, Path(folder) / name) for name in sorted(filenames)]
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name, source in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            if source is None:
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
                continue
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes(), compresslevel=DEFLATE_LEVEL)
    return target


def zip_routes(
    data_root: Path | str,
    route_ids: list[str] | tuple[str, ...],
    *,
    keep_extracted: bool = False,
    member_root: str = MEMBER_ROOT,
) -> list[Path]:
    """Zip every route of `route_ids` (released layout); without `keep_extracted` the extracted folders are
    removed afterwards (and `data/` with them once empty), as after a fresh download.

    Returns:
        The zip paths, in `route_ids` order.
    """
    zips = [zip_route(data_root, route_id, member_root=member_root) for route_id in route_ids]
    if not keep_extracted:
        for route_id in route_ids:
            shutil.rmtree(layout.route_path(data_root, route_id))
        routes_root = layout.routes_root(data_root)
        for scenario in sorted(routes_root.iterdir()) if routes_root.is_dir() else ():
            if scenario.is_dir() and not any(scenario.iterdir()):
                scenario.rmdir()
        if routes_root.is_dir() and not any(routes_root.iterdir()):
            routes_root.rmdir()
    return zips
