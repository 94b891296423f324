"""The epoch plan and shard order are pure, seeded functions with LEAD's bucket-rate meaning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lead_stream.loader import sampling


def _buckets(sizes: list[int]) -> list[np.ndarray]:
    starts = np.cumsum([0, *sizes])
    return [np.arange(starts[i], starts[i + 1]) for i in range(len(sizes))]


def test_each_bucket_contributes_floor_of_size_times_rate() -> None:
    buckets = _buckets([10, 7, 5])
    plan = sampling.epoch_plan(buckets, [0.5, 1.0, 2.6], seed=0, epoch=0)
    assert np.bincount(plan.bucket_idx, minlength=3).tolist() == [5, 7, 13]
    assert len(plan) == 25
    for bucket, rows in enumerate(buckets):
        assert np.isin(plan.rows[plan.bucket_idx == bucket], rows).all()


def test_rate_at_most_one_draws_without_replacement() -> None:
    plan = sampling.epoch_plan(_buckets([100]), [0.37], seed=3, epoch=1)
    assert len(plan) == 37 and len(np.unique(plan.rows)) == 37


def test_rate_above_one_uses_full_permutations_then_a_partial_draw() -> None:
    plan = sampling.epoch_plan(_buckets([10]), [2.5], seed=0, epoch=0)
    counts = np.bincount(plan.rows, minlength=10)
    assert sorted(counts.tolist()) == [2] * 5 + [3] * 5


def test_rate_zero_bucket_is_absent_and_empty_plan_raises() -> None:
    plan = sampling.epoch_plan(_buckets([4, 6]), [0.0, 1.0], seed=0, epoch=0)
    assert set(plan.bucket_idx.tolist()) == {1}
    with pytest.raises(ValueError, match="empty epoch plan"):
        sampling.epoch_plan(_buckets([4]), [0.0], seed=0, epoch=0)


def test_epoch_size_truncates_or_repeats_the_shuffled_plan() -> None:
    full = sampling.epoch_plan(_buckets([6, 4]), [1.0, 1.0], seed=5, epoch=2)
    short = sampling.epoch_plan(_buckets([6, 4]), [1.0, 1.0], seed=5, epoch=2, epoch_size=7)
    long = sampling.epoch_plan(_buckets([6, 4]), [1.0, 1.0], seed=5, epoch=2, epoch_size=25)
    np.testing.assert_array_equal(short.rows, full.rows[:7])
    np.testing.assert_array_equal(long.rows, np.resize(full.rows, 25))


def test_same_seed_same_plan_other_seed_or_epoch_other_order() -> None:
    args = (_buckets([50, 30]), [1.0, 0.5])
    a = sampling.epoch_plan(*args, seed=1, epoch=0)
    b = sampling.epoch_plan(*args, seed=1, epoch=0)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.fingerprint == b.fingerprint
    for other in (sampling.epoch_plan(*args, seed=2, epoch=0), sampling.epoch_plan(*args, seed=1, epoch=1)):
        assert not np.array_equal(a.rows, other.rows) and other.fingerprint != a.fingerprint
    # (seed, epoch) is not collapsed to seed + epoch as in LEAD
    assert (
        sampling.epoch_plan(*args, seed=0, epoch=1).fingerprint
        != sampling.epoch_plan(*args, seed=1, epoch=0).fingerprint
    )


def test_bucket_shares_match_mixture_in_expectation_and_exactly_per_epoch() -> None:
    buckets = _buckets([300, 200, 100])
    rates = [0.5, 1.0, 3.0]
    plan = sampling.epoch_plan(buckets, rates, seed=0, epoch=0)
    expected = np.array([150, 200, 300]) / 650
    share = np.bincount(plan.bucket_idx, minlength=3) / len(plan)
    np.testing.assert_allclose(share, expected)
    first_half = np.bincount(plan.bucket_idx[:325], minlength=3) / 325  # shuffled: any prefix is close too
    np.testing.assert_allclose(first_half, expected, atol=0.06)


def test_resolve_rates_overrides_named_buckets_and_rejects_unknown() -> None:
    rates = sampling.resolve_rates(("a", "b"), (1.0, 1.0), {"b": 2.5})
    assert rates.tolist() == [1.0, 2.5]
    with pytest.raises(ValueError, match="unknown bucket 'c'"):
        sampling.resolve_rates(("a", "b"), (1.0, 1.0), {"c": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        sampling.resolve_rates(("a",), (1.0,), {"a": -1.0})


def test_padding_and_rank_and_worker_slices_cover_every_slot_once() -> None:
    plan_len, global_batch, world_size, num_workers = 23, 8, 2, 3
    slots = sampling.padded_slots(plan_len, global_batch)
    assert slots.shape == (24,) and slots[-1] == 0  # one pad, taken from the plan's start
    num_batches = sampling.num_global_batches(plan_len, global_batch)
    seen = []
    for rank in range(world_size):
        for worker in range(num_workers):
            for read in sampling.worker_reads(num_batches, start=0, worker=worker, num_workers=num_workers):
                for g in read:
                    seen.extend(
                        sampling.rank_slots(
                            g, global_batch=global_batch, rank=rank, world_size=world_size
                        ).tolist()
                    )
    assert sorted(seen) == list(range(24))


def test_worker_reads_start_after_the_resume_point() -> None:
    def firsts(**kwargs) -> list[list[int]]:
        return [list(read) for read in sampling.worker_reads(10, start=3, **kwargs)]

    assert firsts(worker=1, num_workers=2) == [[4], [6], [8]]
    assert firsts(worker=0, num_workers=0) == [[g] for g in range(3, 10)]
    # reads of 3 batches, counted from the resume point; the last one is cut at the epoch's end
    assert firsts(worker=0, num_workers=2, batches_per_read=3) == [[3, 4, 5], [9]]
    assert firsts(worker=1, num_workers=2, batches_per_read=3) == [[6, 7, 8]]
    assert firsts(worker=0, num_workers=0, batches_per_read=3) == [[3, 4, 5], [6, 7, 8], [9]]


def test_worker_reads_of_every_size_serve_every_batch_once_in_round_robin_order() -> None:
    for num_batches, start, num_workers, k in [(10, 0, 2, 2), (11, 3, 3, 2), (7, 1, 2, 4), (5, 0, 1, 8)]:
        reads = [
            sampling.worker_reads(
                num_batches, start=start, worker=w, num_workers=num_workers, batches_per_read=k
            )
            for w in range(num_workers)
        ]
        # the DataLoader takes one read from each worker in turn: that order is the epoch's batch order
        order = [g for turn in range(max(map(len, reads))) for w in reads if turn < len(w) for g in w[turn]]
        assert order == list(range(start, num_batches)), (num_batches, start, num_workers, k)


def test_perturbation_draws_are_seeded_and_match_probability() -> None:
    a = sampling.perturbation_draws(4000, prob=0.3, seed=0, epoch=0)
    np.testing.assert_array_equal(a, sampling.perturbation_draws(4000, prob=0.3, seed=0, epoch=0))
    assert not np.array_equal(a, sampling.perturbation_draws(4000, prob=0.3, seed=0, epoch=1))
    assert abs(a.mean() - 0.3) < 0.03
    assert not sampling.perturbation_draws(10, prob=0.0, seed=0, epoch=0).any()


def test_shard_weight_is_sum_of_sample_weights_from_bucket_rates() -> None:
    member_rows = np.array([0, 1, 2, 2, 3])  # row 2 is in both buckets
    member_bucket = np.array([0, 0, 0, 1, 1])
    weights = sampling.sample_weights(5, member_rows, member_bucket, np.array([1.0, 2.0]))
    assert weights.tolist() == [1.0, 1.0, 3.0, 2.0, 0.0]
    assert sampling.shard_weights(np.array([0, 0, 1, 1, 1]), weights, 3).tolist() == [2.0, 5.0, 0.0]


def test_shard_order_is_pure_deals_live_shards_once_and_favours_heavy_shards(caplog) -> None:
    weights = np.array([1.0, 0.0, 5.0, 1.0, 1.0, 2.0, 1.0])
    kwargs = dict(seed=4, epoch=0, world_size=2, num_workers=2)
    parts = [sampling.shard_order(weights, rank=r, worker=w, **kwargs) for r in range(2) for w in range(2)]
    again = [sampling.shard_order(weights, rank=r, worker=w, **kwargs) for r in range(2) for w in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert sorted(np.concatenate(parts).tolist()) == [0, 2, 3, 4, 5, 6]  # weight-0 shard left out
    firsts = [
        sampling.shard_order(weights, seed=s, epoch=0, rank=0, world_size=1, worker=0, num_workers=1)[0]
        for s in range(300)
    ]
    assert np.bincount(firsts, minlength=7).argmax() == 2  # heaviest shard comes first most often


def test_show_seed_env_logs_the_seed(monkeypatch, caplog) -> None:
    monkeypatch.setenv(sampling.SHOW_SEED_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="lead_stream.sampling"):
        sampling.epoch_plan(_buckets([3]), [1.0], seed=1234, epoch=7)
    assert '"seed": 1234' in caplog.text and '"epoch": 7' in caplog.text


def test_localize_bounds_shards_per_window_and_keeps_the_plan_multiset() -> None:
    sample_shard = np.repeat(np.arange(20), 10)  # 20 shards x 10 samples
    plan = sampling.epoch_plan(_buckets([150, 50]), [1.0, 2.0], seed=0, epoch=0)
    local = sampling.localize(plan, sample_shard, window=16, seed=0, epoch=0)
    assert sorted(zip(local.rows.tolist(), local.bucket_idx.tolist())) == sorted(
        zip(plan.rows.tolist(), plan.bucket_idx.tolist())
    )

    def touched(rows: np.ndarray) -> int:  # most shards read by one window
        return max(len(set(sample_shard[rows[i : i + 16]].tolist())) for i in range(0, len(rows), 16))

    assert touched(local.rows) <= 16 // 10 + 2 < touched(plan.rows)
    again = sampling.localize(plan, sample_shard, window=16, seed=0, epoch=0)
    assert again.fingerprint == local.fingerprint != plan.fingerprint
