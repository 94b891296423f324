"""A route spec → its results.json record: a leaderboard RouteRecord whose status and infractions follow its kind.

Usable kinds (`perfect`, `min_speed`, `min_speed_outside_lanes`) get the infractions LEAD's filters accept;
rejected kinds (`agent_crashed`, `collision`) get the status or infraction that makes LEAD drop the route.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lead_stream.core.constants import DATA_SAVE_FREQ, RESULT_INFRACTION_KEYS
from lead_stream.synthetic.world import DT_S, EXTRA_STEPS, _RouteSpec


def _results(spec: _RouteSpec, route_length_m: float) -> dict[str, Any]:
    """A full leaderboard RouteRecord (statistics_manager_local.py) for the route's kind."""
    rng = np.random.default_rng([spec.seed, spec.route_idx, 3])
    infractions: dict[str, list[str]] = {key: [] for key in RESULT_INFRACTION_KEYS}
    score_route, penalty = 100.0, 1.0
    if spec.kind in ("min_speed", "min_speed_outside_lanes"):
        for _ in range(int(rng.integers(1, 3))):
            pct = float(rng.uniform(60.0, 95.0))
            infractions["min_speed_infractions"].append(
                f"Average speed is {pct:.2f}% of the surrounding traffic's one"
            )
            penalty *= 1 - 0.3 * (1 - pct / 100)
    if spec.kind == "min_speed_outside_lanes":
        metres = float(rng.uniform(3.0, 20.0))
        pct = 100.0 * metres / max(route_length_m, 1.0)
        infractions["outside_route_lanes"].append(
            f"Agent went outside its route lanes for about {metres:.3f} meters "
            f"({pct:.2f}% of the completed route)"
        )
        penalty *= 1 - pct / 100
    if spec.kind == "collision":
        infractions["collisions_vehicle"].append(
            "Agent collided against object with type=vehicle.tesla.model3 and id=431 "
            "at (x=12.3, y=-45.6, z=0.1)"
        )
        penalty *= 0.6
    if spec.kind == "agent_crashed":
        score_route = float(rng.uniform(10.0, 80.0))
    num_infractions = sum(len(v) for v in infractions.values())
    if spec.kind == "agent_crashed":
        status = "Failed - Agent crashed"
    else:
        status = "Completed" if num_infractions > 0 else "Perfect"
    duration_game = (spec.num_frames * DATA_SAVE_FREQ + EXTRA_STEPS) * DT_S
    return {
        "timestamp": spec.route_date_string,
        "index": spec.route_idx,
        "route_id": f"RouteScenario_{spec.route_idx}_rep0",
        "status": status,
        "num_infractions": num_infractions,
        "infractions": infractions,
        "scores": {
            "score_route": round(score_route, 6),
            "score_penalty": round(penalty, 6),
            "score_composed": round(max(score_route * penalty, 0.0), 6),
        },
        "meta": {
            "route_length": round(float(route_length_m), 3),
            "duration_game": round(duration_game, 3),
            "duration_system": round(duration_game * 1.7, 3),
        },
    }
