"""A LEAD data root → its route ids, and LEAD's route filter (`route_failed`, negated) on a route's results.

Route ids are `"<Scenario>/<route_dir>"` below `<data_root>/data`; `route_usability` is LEAD_FORMAT §2.3
exactly. Nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lead_stream.core import layout
from lead_stream.core.constants import FAILED_STATUSES
from lead_stream.core.errors import LeadFormatError


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
