"""sources: reading raw LEAD routes, LEAD's route filter, stat fingerprints, and errors that name the file."""

from __future__ import annotations

import io
import json
import lzma
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lead_stream.core import layout
from lead_stream.core.constants import FAILED_STATUSES, RESULT_INFRACTION_KEYS
from lead_stream.core.errors import LeadFormatError
from lead_stream.sources import Route, discover_routes, read_lzma_pickle, route_usability

NUM_ROUTES = 4  # conftest.lead_root: usable routes...
NUM_FRAMES = 24  # ...of this many frames each

NUM_REJECTED = 3  # write_synthetic_lead's default


def _usable_route(root: Path) -> Route:
    for route_id in discover_routes(root):
        route = Route(root, route_id)
        if route.results() is not None and route.results()["status"] == "Perfect":
            return route
    raise AssertionError("no Perfect route in the synthetic tree")


def _unfinished_route(root: Path) -> Route:
    return next(Route(root, r) for r in discover_routes(root) if Route(root, r).results() is None)


# --- discovery ----------------------------------------------------------------------------------------------
def test_discover_routes_lists_every_route_sorted(lead_root: Path) -> None:
    route_ids = discover_routes(lead_root)
    assert len(route_ids) == NUM_ROUTES + NUM_REJECTED
    assert route_ids == sorted(route_ids, key=lambda r: tuple(r.split("/")))
    assert all(len(r.split("/")) == 2 for r in route_ids)


def test_discover_routes_skips_files_next_to_routes_and_scenarios(copy_lead_root: Path) -> None:
    before = discover_routes(copy_lead_root)
    scenario = layout.routes_root(copy_lead_root) / before[0].split("/")[0]
    (scenario / "stray_file.txt").write_text("not a route")
    (layout.routes_root(copy_lead_root) / "README.md").write_text("not a scenario")
    assert discover_routes(copy_lead_root) == before


def test_discover_routes_without_data_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(LeadFormatError) as excinfo:
        discover_routes(tmp_path)
    assert excinfo.value.path == tmp_path / "data"


# --- LEAD §2.3 route filter (abstract_bucket_collection.route_failed) ---------------------------------------
def _results(status: str, score: float, num_infractions: int | None = None, **infractions: int) -> dict:
    lists = {key: [f"{key} #{i}" for i in range(infractions.get(key, 0))] for key in RESULT_INFRACTION_KEYS}
    total = sum(len(v) for v in lists.values()) if num_infractions is None else num_infractions
    return {
        "timestamp": "route_000001_route0_01_01_00_00_00",
        "index": 0,
        "route_id": "RouteScenario_0_rep0",
        "status": status,
        "num_infractions": total,
        "infractions": lists,
        "scores": {"score_route": 100.0, "score_penalty": score / 100, "score_composed": score},
        "meta": {"route_length": 100.0, "duration_game": 10.0, "duration_system": 20.0},
    }


USABILITY_CASES = [
    ("perfect", _results("Perfect", 100.0), True),
    ("score_100_with_infractions_is_kept", _results("Completed", 100.0, collisions_vehicle=1), True),
    ("score_100_as_int", _results("Completed", 100, red_light=1), True),
    ("min_speed_only", _results("Completed", 91.3, min_speed_infractions=2), True),
    (
        "completed_min_speed_and_outside_lanes",
        _results("Completed", 88.0, min_speed_infractions=1, outside_route_lanes=1),
        True,
    ),
    ("completed_outside_lanes_only", _results("Completed", 97.0, outside_route_lanes=1), True),
    ("completed_with_collision", _results("Completed", 60.0, collisions_vehicle=1), False),
    (
        "completed_min_speed_plus_collision",
        _results("Completed", 55.0, min_speed_infractions=1, collisions_vehicle=1),
        False,
    ),
    ("timed_out_with_route_timeout", _results("Failed - Agent timed out", 40.0, route_timeout=1), False),
    (
        "deviated_min_speed_and_outside_lanes",
        _results(
            "Failed - Agent deviated from the route", 70.0, min_speed_infractions=1, outside_route_lanes=1
        ),
        False,
    ),
    # LEAD compares num_infractions (the field) against the list lengths, not the lists' sum
    (
        "num_infractions_field_is_what_counts",
        _results("Completed", 90.0, num_infractions=3, min_speed_infractions=2),
        False,
    ),
    # LEAD's rule exactly: a non-crash failure without listed infractions and score < 100 is kept
    ("timed_out_without_infractions_is_kept_by_lead", _results("Failed - Agent timed out", 40.0), True),
    *[(f"failed_status_{status}", _results(status, 35.0), False) for status in FAILED_STATUSES],
    *[
        (f"failed_status_{status}_even_with_score_100", _results(status, 100.0), False)
        for status in FAILED_STATUSES
    ],
]


@pytest.mark.parametrize(
    ("results", "usable"), [c[1:] for c in USABILITY_CASES], ids=[c[0] for c in USABILITY_CASES]
)
def test_route_usability_follows_lead_route_failed(results: dict, usable: bool) -> None:
    ok, reason = route_usability(results, True)
    assert ok is usable
    assert (reason is None) == usable
    if not usable:
        assert results["status"] in reason


def test_route_usability_needs_results_and_meta0() -> None:
    ok, reason = route_usability(None, True)
    assert not ok and "results.json" in reason
    ok, reason = route_usability(_results("Perfect", 100.0), False)
    assert not ok and "metas/0000.pkl" in reason


def test_route_usability_rejects_results_without_the_keys_it_reads() -> None:
    broken = _results("Perfect", 100.0)
    del broken["infractions"]["min_speed_infractions"]
    with pytest.raises(LeadFormatError, match="min_speed_infractions"):
        route_usability(broken, True)


def test_usability_of_generated_routes(lead_root: Path) -> None:
    statuses = {}
    for route_id in discover_routes(lead_root):
        route = Route(lead_root, route_id)
        ok, _ = route.usability()
        results = route.results()
        statuses[route_id] = (results["status"] if results else None, ok)
    assert sum(ok for _, ok in statuses.values()) == NUM_ROUTES
    assert ("Failed - Agent crashed", False) in statuses.values()
    assert ("Completed", False) in statuses.values()
    assert (None, False) in statuses.values()


# --- reading every modality ---------------------------------------------------------------------------------
def test_route_reads_every_modality_of_a_frame(lead_root: Path) -> None:
    route = _usable_route(lead_root)
    assert route.scenario == route.route_id.split("/")[0]
    assert route.path == layout.route_path(lead_root, route.route_id)
    assert route.num_frames() == NUM_FRAMES and route.has_meta0()
    assert all(route.modalities().values())
    meta, boxes = route.meta(5), route.boxes(5)
    assert isinstance(meta["next_target_points_3.25"], list) and boxes[0]["class"] == "ego_car"
    for perturbated in (False, True):
        jpeg = route.rgb_jpeg(5, perturbated=perturbated)
        assert jpeg[:2] == b"\xff\xd8"
        rgb = route.rgb(5, perturbated=perturbated)
        assert rgb.shape == (384, 1152, 3) and rgb.dtype == np.uint8
        sem = route.semantics(5, perturbated=perturbated)
        assert sem.shape == (384, 1152) and sem.dtype == np.uint8 and sem.max() <= 9
        depth = route.depth_m(5, perturbated=perturbated)
        assert depth.shape == (96, 288) and depth.dtype == np.float32
        assert 0 <= depth.min() <= depth.max() <= 50
        hdmap = route.hdmap(5, perturbated=perturbated)
        assert hdmap.shape == (256, 256) and hdmap.dtype == np.uint8
        radar = route.radar(5, perturbated=perturbated)
        assert sorted(radar) == ["radar1", "radar2", "radar3", "radar4"]
        assert all(r.dtype == np.float16 and r.ndim == 2 and r.shape[1] == 4 for r in radar.values())
    lidar = route.lidar(5)
    assert lidar.dtype == np.float64 and lidar.ndim == 2 and lidar.shape[1] == 4 and len(lidar) > 1000
    assert set(np.unique(lidar[:, 3]).astype(int)) <= set(range(10))


def test_unfinished_route_has_sensors_but_no_frames(lead_root: Path) -> None:
    route = _unfinished_route(lead_root)
    assert route.results() is None and route.num_frames() == 0 and not route.has_meta0()
    modalities = route.modalities()
    assert not modalities["metas"] and not modalities["bboxes"] and modalities["rgb"] and modalities["lidar"]
    assert route.rgb(0).shape == (384, 1152, 3)
    assert route.usability() == (False, "results.json missing (route not finished)")


def test_depth_png_16bit_uses_the_96m_scale(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "depth", 2)
    values = np.full((96, 288), 65535, np.uint16)
    values[:, :10] = 32768
    Image.fromarray(values).save(path)
    depth = route.depth_m(2)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth[0, 0], 32768 / 65535 * 96, rtol=1e-6)
    np.testing.assert_allclose(depth[0, 50], 96.0, rtol=1e-6)


def test_route_counts_frames_like_lead_ignoring_tmp_files(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    (route.path / "bboxes" / "0099.pkl.123.tmp").write_bytes(b"half written")
    assert route.num_frames() == NUM_FRAMES


def test_reads_a_pickle_written_like_lead(tmp_path: Path) -> None:
    import pickletools

    meta = {
        "next_target_points_3.25": [[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]],
        "speed": np.float64(3.5),
        "future_positions": np.zeros((41, 3), np.float32),
        "vehicle_door_side": None,
    }
    path = tmp_path / "0000.pkl"
    with lzma.open(path, "wb") as handle:  # LEAD's common_utils.write_pickle
        handle.write(pickletools.optimize(pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)))
    loaded = read_lzma_pickle(path)
    assert loaded["next_target_points_3.25"] == meta["next_target_points_3.25"]
    assert loaded["future_positions"].dtype == np.float32 and loaded["speed"] == 3.5


# --- errors name the file and the problem -------------------------------------------------------------------
def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_truncated_meta_pickle_names_the_file(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "metas", 4)
    _truncate(path, path.stat().st_size // 2)
    with pytest.raises(LeadFormatError, match="truncated or corrupt") as excinfo:
        route.meta(4)
    assert excinfo.value.path == path


def test_garbage_box_pickle_names_the_file(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "bboxes", 1)
    path.write_bytes(b"definitely not xz")
    with pytest.raises(LeadFormatError) as excinfo:
        route.boxes(1)
    assert excinfo.value.path == path


def test_pickle_with_foreign_classes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "0000.pkl"
    path.write_bytes(lzma.compress(pickle.dumps({"when": Path("/etc")}), format=lzma.FORMAT_XZ))
    with pytest.raises(LeadFormatError, match="only builtins and numpy"):
        read_lzma_pickle(path)


def test_meta_that_is_not_a_dict_is_refused(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "metas", 0)
    path.write_bytes(lzma.compress(pickle.dumps([1, 2, 3]), format=lzma.FORMAT_XZ))
    with pytest.raises(LeadFormatError, match="expected a dict"):
        route.meta(0)


@pytest.mark.parametrize("damage", ["bad_soi", "truncated", "garbage_body"])
def test_corrupt_jpeg_names_the_file(copy_lead_root: Path, damage: str) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "rgb", 3, perturbated=True)
    payload = path.read_bytes()
    if damage == "bad_soi":
        path.write_bytes(b"\x89PNG" + payload[4:])
    elif damage == "truncated":
        path.write_bytes(payload[: len(payload) // 3])
    else:
        path.write_bytes(payload[:2] + bytes(range(256)) * 8)
    with pytest.raises(LeadFormatError, match="JPEG") as excinfo:
        route.rgb(3, perturbated=True)
    assert excinfo.value.path == path


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_laz_names_the_file(copy_lead_root: Path, damage: str) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "lidar", 2)
    if damage == "truncated":
        _truncate(path, path.stat().st_size // 2)
    else:
        path.write_bytes(b"LASF" + bytes(500))
    with pytest.raises(LeadFormatError, match="LAZ") as excinfo:
        route.lidar(2)
    assert excinfo.value.path == path


def test_laz_without_time_dimension_is_refused(copy_lead_root: Path) -> None:
    import laspy

    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "lidar", 0)
    header = laspy.LasHeader(point_format=0)
    header.scales = np.array([0.1, 0.1, 0.1])
    las = laspy.LasData(header)
    las.x, las.y, las.z = np.arange(5.0), np.zeros(5), np.zeros(5)
    buffer = io.BytesIO()
    las.write(buffer, do_compress=True)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(LeadFormatError, match="'time'"):
        route.lidar(0)


def test_corrupt_png_and_npz_name_the_file(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    sem = layout.modality_path(route.path, "semantics", 1)
    _truncate(sem, 40)
    with pytest.raises(LeadFormatError, match="PNG") as excinfo:
        route.semantics(1)
    assert excinfo.value.path == sem
    radar = layout.modality_path(route.path, "radar", 1, perturbated=True)
    _truncate(radar, 30)
    with pytest.raises(LeadFormatError, match="NPZ") as excinfo:
        route.radar(1, perturbated=True)
    assert excinfo.value.path == radar


def test_semantics_out_of_range_is_refused(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.modality_path(route.path, "semantics", 0)
    Image.fromarray(np.full((384, 1152), 12, np.uint8)).save(path)
    with pytest.raises(LeadFormatError, match="out of range"):
        route.semantics(0)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"status": "Perfect"}'])
def test_bad_results_json_names_the_file(copy_lead_root: Path, text: str) -> None:
    route = _usable_route(copy_lead_root)
    path = layout.results_path(route.path)
    path.write_text(text)
    with pytest.raises(LeadFormatError) as excinfo:
        route.results()
    assert excinfo.value.path == path


def test_missing_folder_names_the_path(copy_lead_root: Path) -> None:
    route = _usable_route(copy_lead_root)
    shutil.rmtree(route.path / "hdmap_perturbated")
    assert not route.modalities()["hdmap_perturbated"]
    with pytest.raises(LeadFormatError, match="missing") as excinfo:
        route.hdmap(0, perturbated=True)
    assert excinfo.value.path == layout.modality_path(route.path, "hdmap", 0, perturbated=True)
    with pytest.raises(LeadFormatError, match="route directory does not exist"):
        Route(copy_lead_root, "Accident/no_such_route")


def test_empty_route_reads_as_unfinished_and_names_missing_files(copy_lead_root: Path) -> None:
    name = "Town01_Rep0_route_000000_route9_01_01_00_00_00"
    route_dir = layout.routes_root(copy_lead_root) / "Accident" / name
    route_dir.mkdir(parents=True)
    route = Route(copy_lead_root, "Accident/" + route_dir.name)
    assert route.results() is None and route.num_frames() == 0 and not route.has_meta0()
    assert not any(route.modalities().values())
    assert route.usability()[0] is False
    with pytest.raises(LeadFormatError, match="missing") as excinfo:
        route.meta(0)
    assert excinfo.value.path == route_dir / "metas" / "0000.pkl"


# --- fingerprints ------------------------------------------------------------------------------------------
def test_fingerprint_is_stable_and_changes_only_for_the_touched_route(copy_lead_root: Path) -> None:
    routes = [Route(copy_lead_root, r) for r in discover_routes(copy_lead_root)]
    before = {r.route_id: r.fingerprint() for r in routes}
    assert before == {r.route_id: r.fingerprint() for r in routes}
    assert len(set(before.values())) == len(before)
    touched = _usable_route(copy_lead_root)
    results = layout.results_path(touched.path)
    stat = results.stat()
    os.utime(results, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = {r.route_id: r.fingerprint() for r in routes}
    assert {k for k in before if before[k] != after[k]} == {touched.route_id}


@pytest.mark.parametrize("change", ["rewrite_meta", "add_sensor_file", "remove_box", "rewrite_results"])
def test_fingerprint_sees_file_changes(copy_lead_root: Path, change: str) -> None:
    route = _usable_route(copy_lead_root)
    before = route.fingerprint()
    if change == "rewrite_meta":
        meta_path = layout.modality_path(route.path, "metas", 3)
        meta = route.meta(3)
        meta["speed"] = 1.0
        meta_path.write_bytes(lzma.compress(pickle.dumps(meta), format=lzma.FORMAT_XZ))
    elif change == "add_sensor_file":
        shutil.copy(layout.modality_path(route.path, "rgb", 0), route.path / "rgb" / "0999.jpg")
    elif change == "remove_box":
        layout.modality_path(route.path, "bboxes", NUM_FRAMES - 1).unlink()
    else:
        results = route.results()
        results["meta"]["duration_system"] += 1.0
        layout.results_path(route.path).write_text(json.dumps(results))
    assert route.fingerprint() != before


def test_reads_numpy1_pickles_without_deprecation_warnings(tmp_path: Path) -> None:
    import warnings

    meta = {"future_yaws": np.arange(3, dtype=np.float32), "speed": np.float64(2.0)}
    legacy = pickle.dumps(meta, protocol=2)
    assert b"numpy._core" in legacy
    path = tmp_path / "0000.pkl"  # numpy 1.x writes 'numpy.core.multiarray' in GLOBAL opcodes
    path.write_bytes(lzma.compress(legacy.replace(b"numpy._core", b"numpy.core"), format=lzma.FORMAT_XZ))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_lzma_pickle(path)
    np.testing.assert_array_equal(loaded["future_yaws"], np.arange(3, dtype=np.float32))


def test_layout_paths_follow_lead_naming(tmp_path: Path) -> None:
    route_id = "Accident/Town01_Rep0_route_000001_route0_01_01_00_00_00"
    route_dir = layout.route_path(tmp_path, route_id)
    assert route_dir == tmp_path / "data" / "Accident" / "Town01_Rep0_route_000001_route0_01_01_00_00_00"
    assert layout.route_id_of(tmp_path, route_dir) == route_id
    assert layout.modality_path(route_dir, "rgb", 7) == route_dir / "rgb" / "0007.jpg"
    depth = layout.modality_path(route_dir, "depth", 12, perturbated=True)
    assert depth == route_dir / "depth_perturbated" / "0012.png"
    assert layout.modality_path(route_dir, "lidar", 0).name == "0000.laz"
    assert layout.modality_path(route_dir, "metas", 1234).name == "1234.pkl"
    with pytest.raises(KeyError):
        layout.modality_path(route_dir, "lidar", 0, perturbated=True)
    with pytest.raises(KeyError):
        layout.modality_path(route_dir, "camera", 0)
    num_dirs = len(layout.MODALITY_EXT) + len(layout.PERTURBATED_MODALITIES)
    assert len(layout.all_modality_dirnames()) == num_dirs
