"""A LEAD data root → its routes (extracted folders and zips, by route id), and LEAD's route filter
(`route_failed`, negated) on a route's results.

Route ids are `"<Scenario>/<route_dir>"`: extracted routes live below `<data_root>/data`, zipped ones
anywhere below the data root (released layout `zip/<Scenario>/<route>.zip`) or below a remote root (URL);
a zip's routes are found from its member names. `route_usability` is LEAD_FORMAT §2.3 exactly. Nothing is
written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lead_stream.core import layout
from lead_stream.core.constants import FAILED_STATUSES
from lead_stream.core.errors import LeadFormatError
from lead_stream.sources.byte_sources import find_remote_zips, is_url
from lead_stream.sources.stores import (
    ZIP_PREFIX_SEP,
    open_archive,
    record_location,
    route_prefixes,
    zip_route_id,
)

# statuses LEAD's Failed collection skips (route_completed_but_fail): the route never really ran
CRASH_STATUSES = (
    "Failed - Agent couldn't be set up",
    "Failed - Simulation crashed",
    "Failed - Agent crashed",
)
_NOT_DATA_DIRS = frozenset({"index", "cache", "buckets"})  # what lead-stream and LEAD write into a data root
_ROUTE_DIRS = frozenset(layout.all_modality_dirnames())


def find_route_folders(data_root: Path | str) -> dict[str, str]:
    """Extracted routes `<data_root>/data/<Scenario>/<route_dir>/` by route id (non-directories skipped), as
    path strings (no pathlib per route: ~30 k routes)."""
    root = layout.routes_root(data_root)
    folders = {}
    try:
        scenarios = sorted(os.scandir(root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for scenario in scenarios:
        if not scenario.is_dir():
            continue
        for route in os.scandir(scenario.path):
            if route.is_dir():
                folders[f"{scenario.name}/{route.name}"] = route.path
    return dict(sorted(folders.items()))


def find_zips(root: Path | str) -> list[str]:
    """Every `*.zip` below a data root (local path: sorted absolute paths; URL: sorted URLs).

    Locally the walk skips `index/`, `cache/`, `buckets/` and hidden folders at the top, never enters an
    extracted route (a folder holding LEAD modality folders) and follows symlinked folders once.
    """
    if is_url(str(root)):
        return find_remote_zips(str(root))
    root = Path(root)
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in _NOT_DATA_DIRS]
        if here.parent == layout.routes_root(root) or _ROUTE_DIRS.intersection(dirnames):
            dirnames[:] = []  # <data>/<Scenario>/ holds routes (zips are files there); a route holds no zips
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [str(here / f) for f in filenames if f.lower().endswith(".zip") and not f.startswith(".")]
    return sorted(found)


def zip_route_prefixes(location: str) -> list[tuple[str, str]]:
    """(route_id, member prefix) of every route inside the zip at `location` (reads its central directory).

    Raises:
        LeadFormatError: unreadable or truncated zip, or a zip holding no LEAD route.
    """
    archive = open_archive(location)
    prefixes = route_prefixes(archive.members)
    if not prefixes:
        raise LeadFormatError(location, "zip holds no LEAD route (no results.json or modality folders)")
    return [(zip_route_id(prefix, location), prefix) for prefix in prefixes]


def zip_route_guess(location: str) -> str:
    """The route id a zip's path suggests (released layout `<Scenario>/<route_dir>.zip`): named for a zip
    too damaged to read its central directory."""
    return zip_route_id("", location)


def discover_sources(data_root: Path | str, *, extra_roots: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Route id → locators of every copy found (extracted folder first, then zips by location).

    Copies are not compared here (`Route` / the index do). A zip whose central directory cannot be read is
    listed under the route id its path suggests, so the index records it as an unreadable route.

    Args:
        data_root: the local data root (folders under `data/`, zips anywhere below it).
        extra_roots: more roots searched the same way: local folders (extracted routes under their `data/`,
            zips anywhere) or URLs (zips only).

    Raises:
        LeadFormatError: no routes at all (neither `data/<Scenario>/<route>/` nor a zip).
    """
    sources: dict[str, list[str]] = {}
    roots = ([] if is_url(str(data_root)) else [str(data_root)]) + list(extra_roots)
    for root in roots:
        if not is_url(root):
            for route_id, folder in find_route_folders(root).items():
                sources.setdefault(route_id, []).append(record_location(data_root, folder))
    zips = sorted({z for root in roots for z in find_zips(root)})
    for location in zips:
        try:
            found = zip_route_prefixes(location)
        except LeadFormatError:
            found = [(zip_route_guess(location), "")]
        for route_id, prefix in found:
            locator = f"{record_location(data_root, location)}{ZIP_PREFIX_SEP}{prefix}"
            sources.setdefault(route_id, []).append(locator)
    if not sources and not any(layout.routes_root(r).is_dir() for r in roots if not is_url(r)) and not zips:
        raise LeadFormatError(
            layout.routes_root(data_root),
            "missing folder: expected <data_root>/data/<Scenario>/<route>/ or zip/<Scenario>/<route>.zip",
        )
    return dict(sorted(sources.items()))


def discover_routes(data_root: Path | str) -> list[str]:
    """Sorted route_ids (`"<Scenario>/<route_dir>"`): extracted routes below `<data_root>/data` (skipping
    non-directories) and routes inside zips anywhere below the data root.

    Raises:
        LeadFormatError: neither `<data_root>/data` nor any zip exists.
    """
    return list(discover_sources(data_root))


def results_problem(results: Any) -> str | None:
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
    problem = results_problem(results)
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
        return False, (
            f"status {status!r}, score_composed {score} with {num_infractions} infraction(s) "
            f"beyond min-speed/outside-lanes ({detail})"
        )
    return True, None


def route_completed_but_failed(results: dict | None, has_meta0: bool) -> bool:
    """LEAD's `route_completed_but_fail` (route_filtering.py), the rule of its Failed collection: results.json
    and metas/0000.pkl exist, the status is not a set-up / simulation / agent crash, and the route is not
    kept for a perfect score, min-speed-only infractions (Completed), or min-speed + outside-lanes ones
    (Completed). Plain "Failed" routes count (LEAD does not exclude them here).

    Raises:
        LeadFormatError: `results` lacks the keys the rule reads.
    """
    if results is None or not has_meta0:
        return False
    problem = results_problem(results)
    if problem is not None:
        raise LeadFormatError(layout.RESULTS_FILENAME, problem)
    status = results["status"]
    if status in CRASH_STATUSES:
        return False
    score = results["scores"]["score_composed"]
    num_infractions = results["num_infractions"]
    num_min_speed = len(results["infractions"]["min_speed_infractions"])
    num_outside_lanes = len(results["infractions"]["outside_route_lanes"])
    if score == 100.0:
        return False
    if status == "Completed" and score < 100.0 and num_infractions == num_min_speed:
        return False
    return not (status == "Completed" and num_infractions == num_min_speed + num_outside_lanes)
