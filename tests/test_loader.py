"""The streaming loader serves the epoch plan exactly, resumes exactly and decodes shard members right."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import simplejpeg
import torch

from lead_stream.cache import features
from lead_stream.cache.manifest import file_sha256, read_manifest, read_sample_members, resolve_cache_dir
from lead_stream.core import codecs
from lead_stream.core.batch import BATCH_TENSOR_FIELDS, Batch, RunCoded, lidar_unit
from lead_stream.core.container import decode_group
from lead_stream.core.errors import ConfigError, LeadFormatError, LeadStreamError
from lead_stream.loader import LoaderConfig, StreamingLoader, build_epoch, make_loader
from lead_stream.loader.collate import BatchBuffers
from lead_stream.loader.sample_layout import command_one_hot
from lead_stream.loader.sampling import rank_slots
from lead_stream.loader.tar_reader import split_members
from lead_stream.sources.route import decode_depth_png


def _rows(loader: StreamingLoader, batch: Batch) -> list[int]:
    """Manifest rows of a batch's samples (route_id, frame_idx → row)."""
    cat = loader.catalog
    if not hasattr(loader, "_row_of"):
        loader._row_of = {
            (cat.route_id(c), int(f)): i for i, (c, f) in enumerate(zip(cat.sample_route, cat.sample_frame))
        }
    return [loader._row_of[(r, int(f))] for r, f in zip(batch.route_id, batch.frame_idx)]


def _assert_batches_equal(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.route_id == y.route_id
        x, y = x.dense(), y.dense()
        for name in BATCH_TENSOR_FIELDS:
            assert torch.equal(getattr(x, name), getattr(y, name)), name


@pytest.fixture(scope="module")
def two_bucket_root(sharded_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose pretrain table splits the real one in two buckets (routes by scenario parity)."""
    root = tmp_path_factory.mktemp("two_buckets")
    table = pl.read_parquet(sharded_root / "index" / "buckets" / "pretrain.parquet")
    routes = sorted(table["route_id"].unique().to_list())
    first = routes[: len(routes) // 2]
    split = table.with_columns(
        pl.when(pl.col("route_id").is_in(first))
        .then(pl.lit("first"))
        .otherwise(pl.lit("rest"))
        .alias("bucket")
    )
    (root / "index" / "buckets").mkdir(parents=True)
    split.write_parquet(root / "index" / "buckets" / "pretrain.parquet")
    return root


def test_batch_matches_the_chosen_variant_members(sharded_root: Path) -> None:
    loader = make_loader(
        sharded_root, config=LoaderConfig(batch_size=4, num_workers=0, perturbation_prob=0.5)
    )
    coded = next(iter(loader))
    for name in ("lidar_bev", "semantic", "bev_semantic"):  # rasters leave the loader run-length coded
        runs = getattr(coded, name)
        assert (
            isinstance(runs, RunCoded)
            and runs.values.dtype == torch.uint8
            and runs.lengths.dtype == torch.int32
        )
        assert runs.values.shape == runs.lengths.shape and int(runs.lengths.sum()) == math.prod(runs.shape)
    batch = coded.to("cpu")  # expands them (Batch.to on a GPU does the same there)
    assert batch.rgb.shape == (4, 3, 384, 1152) and batch.rgb.dtype == torch.uint8
    assert batch.lidar_bev.shape == (4, 1, 320, 384) and batch.lidar_bev.dtype == torch.uint8
    assert batch.boxes.shape == (4, 90, 9) and batch.radar.shape == (4, 300, 5)
    assert batch.depth_u8.shape == (4, 96, 288) and batch.depth_u8.dtype == torch.uint8
    assert batch.semantic.shape == (4, 384, 1152)
    manifest = read_manifest(resolve_cache_dir(sharded_root))
    for i, row in enumerate(_rows(loader, batch)):
        sample = manifest.samples.row(row, named=True)
        members = read_sample_members(
            manifest.shard_path(sample["shard"]), sample["offset"], sample["size_bytes"]
        )
        pert = bool(batch.perturbated[i])
        sfx = "_pert" if pert else ""
        rgb = simplejpeg.decode_jpeg(members[f"rgb{sfx}.jpg"], colorspace="RGB")
        assert torch.equal(batch.rgb[i], torch.from_numpy(rgb).permute(2, 0, 1))
        sample_arrays = features.decode_member("arrays.lz4", members["arrays.lz4"])
        arrays, targets = sample_arrays["perturbated" if pert else "normal"], sample_arrays["targets"]

        def same(got: torch.Tensor, want: np.ndarray) -> None:  # bit-exact, dtype included
            assert torch.equal(got, torch.from_numpy(np.array(want)))

        same(batch.lidar_bev[i, 0], arrays["lidar_bev"])
        lidar = np.divide(arrays["lidar_bev"], np.float32(5), dtype=np.float32)
        same(lidar_unit(batch.lidar_bev[i, 0]), lidar)
        same(batch.semantic[i], arrays["semantic"])
        same(batch.bev_semantic[i], arrays["bev_semantic"])
        same(batch.depth_u8[i], arrays["depth"])
        same(batch.depth_m[i], decode_depth_png(arrays["depth"]))  # LEAD: (v / 255) * 50 in float32
        boxes = arrays["boxes"]
        assert int(batch.num_boxes[i]) == len(boxes)
        same(batch.boxes[i, : len(boxes)], boxes)
        assert not batch.boxes[i, len(boxes) :].any()
        radar = np.zeros((300, 5), np.float32)
        radar[:, 4] = np.arange(300) // 75  # LEAD pads each sensor's block with [0, 0, 0, 0, sensor id]
        for sensor in range(4):
            points = arrays["radar"][arrays["radar"][:, 4] == sensor]
            radar[75 * sensor : 75 * sensor + len(points)] = points
        same(batch.radar[i], radar)
        same(batch.radar_detections[i], arrays["radar_detections"])
        for name in (
            "target_point",
            "target_point_previous",
            "target_point_next",
            "future_waypoints",
            "future_yaws_rad",
            "route",
        ):
            same(getattr(batch, name)[i], arrays[name])
        assert float(batch.speed_mps[i]) == np.float32(targets["speed_mps"])
        assert bool(batch.planning_valid[i]) == targets["planning_valid"]


def test_epoch_serves_the_plan_with_padding_counted(sharded_root: Path) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=12, num_workers=0))
    epoch = build_epoch(loader.catalog, loader.config, epoch=0, mixture=None)
    batches = list(loader)
    served = [row for batch in batches for row in _rows(loader, batch)]
    assert len(batches) == len(loader) == -(-len(loader.plan) // 12)
    assert served == epoch.slot_rows.tolist()
    assert sorted(set(served)) == sorted(set(loader.plan.rows.tolist()))
    pads = len(batches) * 12 - len(loader.plan)
    assert loader.telemetry()["pads"] == pads > 0
    assert len(loader.plan) == loader.catalog.collection_size  # default epoch = samples in the collection
    assert len(list(loader)) == len(batches)  # iterating again without set_epoch re-serves the epoch


def test_bucket_shares_match_the_mixture_and_reweighting_rewrites_no_shard(
    sharded_root, two_bucket_root
) -> None:
    cache_dir = resolve_cache_dir(sharded_root)
    before = {p.name: (p.stat().st_mtime_ns, file_sha256(p)) for p in sorted(cache_dir.glob("shard-*.tar"))}
    config = LoaderConfig(batch_size=8, num_workers=1, epoch_size=0, seed=3)  # 0: LEAD's Σ int(len·rate)
    loader = make_loader(two_bucket_root, config=config, cache_dir=cache_dir)
    sizes = {name: len(rows) for name, rows in zip(loader.bucket_names, loader.catalog.bucket_rows)}
    for epoch, mixture in enumerate([{"first": 1.0, "rest": 1.0}, {"first": 2.0, "rest": 0.5}]):
        loader.set_mixture(mixture)
        loader.set_epoch(epoch)
        want = {name: int(sizes[name] * rate) for name, rate in mixture.items()}
        served = torch.cat([batch.bucket_idx for batch in loader])[: len(loader.plan)]
        got = {name: int((served == i).sum()) for i, name in enumerate(loader.bucket_names)}
        assert got == want
    # statistical view over many seeds: the share of "first" in any half epoch follows its mixture share
    shares = []
    for seed in range(20):
        plan = build_epoch(
            loader.catalog,
            LoaderConfig(batch_size=8, seed=seed, epoch_size=0),
            epoch=0,
            mixture={"first": 2.0, "rest": 0.5},
        ).plan
        shares.append(float((plan.bucket_idx[: len(plan) // 2] == 0).mean()))
    expected = int(sizes["first"] * 2.0) / (int(sizes["first"] * 2.0) + int(sizes["rest"] * 0.5))
    assert abs(np.mean(shares) - expected) < 0.03
    after = {p.name: (p.stat().st_mtime_ns, file_sha256(p)) for p in sorted(cache_dir.glob("shard-*.tar"))}
    assert after == before


def test_order_is_seeded_and_every_epoch_reaches_persistent_workers(sharded_root: Path) -> None:
    config = LoaderConfig(batch_size=4, num_workers=2, persistent_workers=True, epoch_size=16, seed=0)
    loader = make_loader(sharded_root, config=config)
    orders = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        orders.append([row for batch in loader for row in _rows(loader, batch)])
        assert orders[-1] == build_epoch(loader.catalog, config, epoch=epoch, mixture=None).slot_rows.tolist()
    assert orders[0] != orders[1]  # LEAD's frozen-order defect is fixed
    again = make_loader(sharded_root, config=config)
    assert (
        again.plan.fingerprint == build_epoch(loader.catalog, config, epoch=0, mixture=None).plan.fingerprint
    )
    other = make_loader(sharded_root, config=LoaderConfig(batch_size=4, epoch_size=16, seed=1))
    assert other.plan.rows.tolist() != again.plan.rows.tolist()


@pytest.mark.parametrize(
    ("num_workers", "rank", "world_size"),
    [(0, 0, 1), (1, 0, 1), (2, 0, 1), (1, 1, 2)],
    ids=["main", "1worker", "2workers", "rank1of2"],
)
def test_resume_after_k_batches_gives_identical_next_batches(
    sharded_root: Path, num_workers: int, rank: int, world_size: int
) -> None:
    config = LoaderConfig(batch_size=4, num_workers=num_workers, epoch_size=22, seed=7)
    build = lambda: make_loader(sharded_root, config=config, rank=rank, world_size=world_size)
    reference = build()
    reference.set_epoch(1)
    full = list(reference)
    assert len(full) == 6
    first = build()
    first.set_epoch(1)
    iterator = iter(first)
    head = [next(iterator), next(iterator)]
    state = first.state_dict()
    assert state["global_batches_done"] == 2 and state["epoch"] == 1
    second = build()
    second.load_state_dict(json.loads(json.dumps(state)))  # the state is JSON
    second.set_mixture(None)  # a trainer's per-epoch calls keep the resume position
    second.set_epoch(1)
    iterator = iter(second)
    middle = [next(iterator), next(iterator)]
    third = build()  # resume of a resume
    third.load_state_dict(second.state_dict())
    _assert_batches_equal(head + middle + list(third), full)


def test_resume_rejects_another_global_batch_or_changed_plan(
    sharded_root: Path, two_bucket_root: Path
) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=4, num_workers=0))
    state = loader.state_dict()
    resumed = make_loader(sharded_root, config=LoaderConfig(batch_size=4, num_workers=0))
    resumed.load_state_dict(state)
    with pytest.raises(ConfigError, match="differs from the checkpointed"):
        resumed.set_mixture({resumed.bucket_names[0]: 0.5})
    with pytest.raises(ConfigError, match="global batch"):
        make_loader(sharded_root, config=LoaderConfig(batch_size=8, num_workers=0)).load_state_dict(state)
    with pytest.raises(LeadStreamError, match="plan of epoch 0 changed"):
        make_loader(
            two_bucket_root,
            config=LoaderConfig(batch_size=4, num_workers=0, epoch_size=0),
            cache_dir=resolve_cache_dir(sharded_root),
        ).load_state_dict(state)


def test_pipe_url_shards_are_downloaded_once_and_read_the_same(sharded_root: Path, tmp_path: Path) -> None:
    cache_dir = resolve_cache_dir(sharded_root)
    base = LoaderConfig(batch_size=4, num_workers=0, epoch_size=8)
    local = list(make_loader(sharded_root, config=base))
    remote_config = LoaderConfig(
        batch_size=4,
        num_workers=0,
        epoch_size=8,
        shard_url=f"pipe:cat {cache_dir}/{{shard}}",
        local_cache_dir=str(tmp_path / "shards"),
    )
    remote = list(make_loader(sharded_root, config=remote_config))
    _assert_batches_equal(local, remote)
    copies = list((tmp_path / "shards").iterdir())
    assert copies and not [p for p in copies if p.name.endswith(".tmp")]


def _corrupt_one_sample(
    sharded_root: Path, tmp_path: Path, member: str = "arrays.lz4", skip: int = 0
) -> tuple[Path, str]:
    """A copy of the cache whose first pretrain sample has a garbled `member` (bytes from `skip` on)."""
    source = resolve_cache_dir(sharded_root)
    cache_dir = tmp_path / source.name
    shutil.copytree(source, cache_dir)
    manifest = read_manifest(cache_dir)
    table = pl.read_parquet(sharded_root / "index" / "buckets" / "pretrain.parquet")
    sample = manifest.samples.join(table.select("route_id", "frame_idx"), on=["route_id", "frame_idx"]).row(
        0, named=True
    )
    with open(cache_dir / sample["shard"], "r+b") as handle:
        handle.seek(sample["offset"])
        blob = handle.read(sample["size_bytes"])
        header_at = blob.index(f"{sample['key']}.{member}".encode())
        handle.seek(sample["offset"] + header_at + 512 + skip)
        handle.write(b"\xff{{{")
    return cache_dir, sample["key"]


def test_bad_sample_raises_by_default_naming_shard_key_and_member(sharded_root: Path, tmp_path: Path) -> None:
    cache_dir, key = _corrupt_one_sample(sharded_root, tmp_path)
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=8, num_workers=1), cache_dir=cache_dir)
    with pytest.raises(LeadFormatError, match=rf"{key}.*arrays\.lz4") as info:
        list(loader)
    assert info.value.path.name.startswith("shard-")


def test_bad_sample_skip_repeats_a_good_sample_and_keeps_batch_count(
    sharded_root: Path, tmp_path: Path
) -> None:
    cache_dir, key = _corrupt_one_sample(sharded_root, tmp_path)
    config = LoaderConfig(batch_size=8, num_workers=0, on_bad_sample="skip", batches_per_read=3)
    loader = make_loader(sharded_root, config=config, cache_dir=cache_dir)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert all(batch.size == 8 for batch in batches)
    served_keys = {f"{r}/{int(f):04d}" for b in batches for r, f in zip(b.route_id, b.frame_idx)}
    assert key not in served_keys
    # the replacement is a sample of the bad sample's own batch, though 3 batches are read at once
    epoch = build_epoch(loader.catalog, config, epoch=0, mixture=None)
    for g, batch in enumerate(batches):
        planned = {loader.catalog.key(int(r)) for r in epoch.slot_rows[g * 8 : (g + 1) * 8]}
        assert {f"{r}/{int(f):04d}" for r, f in zip(batch.route_id, batch.frame_idx)} <= planned
    bad_row = loader.catalog.sample_key.tolist().index(key.encode())
    assert (
        loader.telemetry()["skipped"]
        == int((build_epoch(loader.catalog, config, epoch=0, mixture=None).slot_rows == bad_row).sum())
        >= 1
    )


def test_frames_missing_from_the_manifest_are_skipped_and_counted(sharded_root: Path, tmp_path: Path) -> None:
    table = pl.read_parquet(sharded_root / "index" / "buckets" / "pretrain.parquet")
    ghost = table.head(1).with_columns(pl.lit(9999).cast(table.schema["frame_idx"]).alias("frame_idx"))
    (tmp_path / "index" / "buckets").mkdir(parents=True)
    pl.concat([table, ghost]).write_parquet(tmp_path / "index" / "buckets" / "pretrain.parquet")
    loader = make_loader(
        tmp_path, config=LoaderConfig(num_workers=0), cache_dir=resolve_cache_dir(sharded_root)
    )
    assert loader.telemetry()["missing_from_manifest"] == 1
    assert len(loader.plan) == table.height


def test_rank_takes_its_slice_of_each_global_batch(sharded_root: Path) -> None:
    config = LoaderConfig(batch_size=6, num_workers=0, epoch_size=20)
    epoch = None
    for rank in range(3):
        loader = make_loader(sharded_root, config=config, rank=rank, world_size=3)
        epoch = epoch or build_epoch(loader.catalog, config, epoch=0, mixture=None)
        for g, batch in enumerate(loader):
            assert (
                _rows(loader, batch)
                == epoch.slot_rows[rank_slots(g, global_batch=6, rank=rank, world_size=3)].tolist()
            )
    with pytest.raises(ConfigError, match="divisible"):
        make_loader(sharded_root, config=config, rank=0, world_size=4)


def test_telemetry_reports_throughput_wait_pads_and_skips(sharded_root: Path) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=4, num_workers=1, epoch_size=8))
    list(loader)
    tele = loader.telemetry()
    for name in (
        "samples_per_s",
        "data_wait_s",
        "pads",
        "skipped",
        "peak_rss_mb_per_worker",
        "missing_from_manifest",
    ):
        assert name in tele
    assert tele["samples"] == 8 and tele["samples_per_s"] > 0 and tele["peak_rss_mb_per_worker"] > 0


def test_radar_points_go_to_their_sensor_block_and_overflow_is_rejected() -> None:
    buffers = BatchBuffers(3)
    points = np.zeros((4, 5), np.float32)
    points[:, 0] = [1, 2, 3, 4]
    points[:, 4] = [3, 0, 3, 1]  # unsorted sensor ids
    buffers._set_radar(0, points)
    buffers._set_radar(
        1, np.tile(np.array([[1, 1, 1, 1, 2]], np.float16), (76, 1))
    )  # one too many for sensor 2
    buffers._set_radar(2, np.array([[5, 5, 5, 5, 4]], np.float16))  # no sensor 4
    problems = buffers.check_rows()
    assert set(problems) == {1, 2} and "76 points for sensor 2" in problems[1] and "0..3" in problems[2]
    buffers._set_radar(1, None)
    buffers._set_radar(2, points[:1])
    buffers._place_radar()
    assert buffers.radar[0, [0, 75, 225, 226], 0].tolist() == [2, 4, 1, 3]
    assert int((buffers.radar[0, :, 0] != 0).sum()) == 4 and not buffers.radar[1, :, :4].any()
    assert buffers.radar[2, 225, 0] == 1 and int((buffers.radar[2, :, :4] != 0).sum()) == 1
    assert (buffers.radar[:, :, 4] == np.arange(300) // 75).all()  # padding keeps the sensor id (LEAD)


def test_command_one_hot_follows_lead() -> None:
    assert [command_one_hot(c) for c in (-1, 1, 4, 6, 7, 0)] == [3, 0, 3, 5, 3, 3]


def test_split_members_rejects_a_corrupt_header(sharded_root: Path) -> None:
    manifest = read_manifest(resolve_cache_dir(sharded_root))
    sample = manifest.samples.row(0, named=True)
    with open(manifest.shard_path(sample["shard"]), "rb") as handle:
        handle.seek(sample["offset"])
        blob = bytearray(handle.read(sample["size_bytes"]))
    members = split_members(bytes(blob), shard="s.tar", key=sample["key"])
    assert set(members) == set(manifest.members)
    with pytest.raises(LeadFormatError, match="another key"):
        split_members(bytes(blob), shard="s.tar", key="Other/route/0001")
    blob[130] ^= 1  # a size digit of the first header
    with pytest.raises(LeadFormatError, match="checksum|corrupt"):
        split_members(bytes(blob), shard="s.tar", key=sample["key"])


def test_locality_window_reads_few_shards_per_window_and_keeps_the_epoch(sharded_root: Path) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=8, num_workers=0))
    cat = loader.catalog
    local_config = LoaderConfig(batch_size=8, num_workers=0, locality_window=2)
    plain = build_epoch(cat, loader.config, epoch=0, mixture=None).plan
    local = build_epoch(cat, local_config, epoch=0, mixture=None).plan
    assert sorted(local.rows.tolist()) == sorted(plain.rows.tolist())
    per_shard = int(np.bincount(cat.sample_shard).max())
    windows = [cat.sample_shard[local.rows[i : i + 16]] for i in range(0, len(local), 16)]
    assert max(len(set(w.tolist())) for w in windows) <= -(-16 // per_shard) + 2
    batch = next(iter(make_loader(sharded_root, config=local_config)))
    assert _rows(loader, batch) == local.rows[:8].tolist()


def test_unknown_bucket_in_the_mixture_is_a_config_error(sharded_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown bucket 'nope'"):
        make_loader(sharded_root, config=LoaderConfig(num_workers=0, mixture={"nope": 1.0}))


def test_chosen_group_decodes_from_a_tar_view_like_from_bytes(sharded_root: Path) -> None:
    manifest = read_manifest(resolve_cache_dir(sharded_root))
    sample = manifest.samples.row(0, named=True)
    with open(manifest.shard_path(sample["shard"]), "rb") as handle:
        handle.seek(sample["offset"])
        blob = handle.read(sample["size_bytes"])
    view = split_members(blob, shard="s", key=sample["key"])["arrays.lz4"]
    assert isinstance(view, memoryview)
    for group in ("normal", "perturbated"):
        from_view = decode_group(view, group)
        from_bytes = codecs.decode("lz4", bytes(view))[group]
        assert list(from_view) == list(from_bytes)
        for name, array in from_bytes.items():
            assert from_view[name].dtype == array.dtype and np.array_equal(from_view[name], array), name


def test_a_held_batch_is_never_overwritten_by_recycled_buffers(sharded_root: Path) -> None:
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=4, num_workers=0))
    batches = iter(loader)
    held = next(batches)
    snapshot = {name: getattr(held.dense(), name).clone() for name in BATCH_TENSOR_FIELDS}
    later = [next(batches) for _ in range(3)]
    for name, value in snapshot.items():
        assert torch.equal(getattr(held.dense(), name), value), name
    assert held.rgb.data_ptr() not in {b.rgb.data_ptr() for b in later}
    del held, later  # released: the next batches reuse warm buffers
    assert next(batches).size == 4


def test_buffer_pool_recycles_only_unreferenced_buffers() -> None:
    from lead_stream.loader.collate import BufferPool

    pool = BufferPool(max_buffers=2)
    first = pool.take(2)
    batch = first.to_batch()
    assert pool.take(2) is not first  # its tensors are alive
    del batch
    assert pool.take(2) is first


def test_a_garbled_array_container_is_a_format_error_naming_the_member(
    sharded_root: Path, tmp_path: Path
) -> None:
    cache_dir, key = _corrupt_one_sample(sharded_root, tmp_path, member="arrays.lz4")  # breaks the magic
    loader = make_loader(sharded_root, config=LoaderConfig(batch_size=8, num_workers=0), cache_dir=cache_dir)
    with pytest.raises(LeadFormatError, match=rf"{key}.*arrays\.lz4"):
        list(loader)


def test_runs_that_miss_pixels_are_reported_for_their_row() -> None:
    from lead_stream.core import runs

    buffers = BatchBuffers(3)
    values, lengths = runs.encode_runs(np.zeros((384, 1152), np.uint8))

    def stored(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        short, long = runs.split_lengths(lengths)
        return short, np.ascontiguousarray(long.view(np.uint8).reshape(-1, 2).T)

    buffers.runs.fill("semantic", 0, values, *stored(lengths))
    short = lengths.copy()
    short[-1] -= 1
    buffers.runs.fill("semantic", 1, values, *stored(short))
    problems = buffers.check_rows()
    assert list(problems) == [1] and "semantic" in problems[1] and "expected 442368" in problems[1]
    buffers.runs.fill("semantic", 1, values, *stored(lengths))
    marks, long = stored(lengths)
    buffers.runs.fill("semantic", 2, values, marks, long[:, :-1])  # a long length missing
    assert list(buffers.check_rows()) == [2] and "long" in buffers.check_rows()[2]
