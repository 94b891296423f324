"""Held-out selection for validation (issue 14): sequential plans, bucket choice, exclusion, padding rows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lead_stream.core.errors import ConfigError, LeadFormatError
from lead_stream.evaluate.evaluator import evaluation_loader
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.loader.sampling import sequential_plan
from lead_stream.loader.selection import read_members

VAL = dict(collection="town13_heldout_posttrain", buckets=("town13",))


def _keys(loader) -> list[str]:
    return [k.decode() for k in loader.catalog.sample_key[loader.plan.rows]]


def test_sequential_plan_serves_each_sample_once_in_key_order_14():
    keys = np.array([b"b/0001", b"a/0002", b"a/0001", b"c/0000"], dtype=np.bytes_)
    plan = sequential_plan([np.array([0, 1]), np.array([1, 2, 3])], keys)
    assert plan.rows.tolist() == [2, 1, 0, 3]  # a/0001, a/0002, b/0001, c/0000
    assert plan.bucket_idx.tolist() == [1, 0, 0, 1]  # row 1 is in both buckets: its first one
    subset = sequential_plan([np.arange(4)], keys, max_samples=2)
    assert subset.rows.tolist() == [2, 3]  # evenly spaced: first and last
    with pytest.raises(ValueError, match="empty evaluation plan"):
        sequential_plan([np.array([], dtype=np.int64)], keys)


def test_validation_loader_serves_the_heldout_bucket_in_order_14(heldout_root):
    loader = evaluation_loader(heldout_root, **VAL, batch_size=4)
    members = read_members(heldout_root, VAL["collection"], VAL["buckets"])
    expected = sorted(f"{r}/{f:04d}" for r, f in members.select("route_id", "frame_idx").iter_rows())
    assert _keys(loader) == expected and all("Town13" in key for key in expected)
    seen = []
    for idx, batch in enumerate(loader):
        assert not batch.perturbated.any()  # normal sensors only
        real = loader.real_samples(idx)
        seen += [f"{r}/{int(f):04d}" for r, f, ok in zip(batch.route_id, batch.frame_idx, real) if ok]
    assert seen == expected  # every frame once, padding rows marked


def test_training_excludes_heldout_frames_of_the_same_index_14(heldout_root):
    config = LoaderConfig(
        batch_size=4,
        collection="posttrain",
        exclude_collection=VAL["collection"],
        exclude_buckets=VAL["buckets"],
        num_workers=0,
    )
    train_keys = set(_keys(make_loader(heldout_root, config=config)))
    full = set(
        _keys(
            make_loader(
                heldout_root, config=LoaderConfig(batch_size=4, collection="posttrain", num_workers=0)
            )
        )
    )
    heldout = set(_keys(evaluation_loader(heldout_root, **VAL)))
    assert heldout and heldout <= full
    assert train_keys == full - heldout


def test_unknown_bucket_and_total_exclusion_are_errors_14(heldout_root):
    with pytest.raises(ConfigError, match="no bucket 'town99'"):
        evaluation_loader(heldout_root, collection=VAL["collection"], buckets=("town99",))
    with pytest.raises(ConfigError, match="nothing is left"):
        make_loader(
            heldout_root,
            config=LoaderConfig(batch_size=4, collection="posttrain", exclude_collection="posttrain"),
        )
    with pytest.raises(LeadFormatError, match="no bucket table"):
        evaluation_loader(heldout_root, collection="no_such_collection")


def test_max_samples_is_an_evenly_spaced_subset_and_ranks_split_the_frames_14(heldout_root):
    whole = _keys(evaluation_loader(heldout_root, **VAL))
    subset = _keys(evaluation_loader(heldout_root, **VAL, max_samples=3))
    middle = whole[round((len(whole) - 1) / 2)]
    assert subset == [whole[0], middle, whole[-1]]  # np.linspace over the ordered frames, rounded
    per_rank = []
    for rank in range(2):
        loader = evaluation_loader(heldout_root, **VAL, batch_size=4, rank=rank, world_size=2)
        for idx, batch in enumerate(loader):
            real = loader.real_samples(idx)
            per_rank += [f"{r}/{int(f):04d}" for r, f, ok in zip(batch.route_id, batch.frame_idx, real) if ok]
    assert sorted(per_rank) == whole  # the ranks together serve every frame exactly once
    assert pl.Series(per_rank).n_unique() == len(whole)
