"""Bucket table + mixture + (seed, epoch) → the epoch plan: which manifest rows are served, in which order.

Pure numpy, no I/O. The plan of an epoch is a flat int64 array of manifest row ids plus the bucket each
slot was drawn for. As in LEAD's `CARLAData.shuffle(epoch)`, bucket `b` with rate `ρ_b` contributes
`k_b = int(len(b) · ρ_b)` samples, then one global shuffle; `epoch_size` truncates or repeats the result
(LEAD's `carla_num_samples`). Rates are multipliers on bucket size, not normalised probabilities. How a
bucket's `k_b` samples are drawn when `ρ_b > 1` differs on purpose: by default `k_b // len(b)` full
permutations plus a seeded partial draw without replacement (every member appears ⌊ρ_b⌋ or ⌈ρ_b⌉ times);
`with_replacement=True` is LEAD's rule exactly (`rng.choice(len, k, replace=k > len)` from
`default_rng(seed + epoch)`, then `rng.shuffle`), so a member may appear any number of times.

Streaming cuts the plan into global batches. The last global batch is filled from the start of the
same plan again (cyclic padding), so every rank gets the same number of batches; rank `r` takes slots
`[r·b, (r+1)·b)` of each global batch (`b = global_batch // world_size`). A worker reads `k` consecutive
global batches at a time (a *read*: its per-batch costs paid once for k batches); counted from the resume
point, read `c` covers batches `[start + c·k, start + (c+1)·k)` and worker `w` of a rank takes the reads
`c ≡ w (mod num_workers)`, so a batch's content never depends on k, the worker count or the resume point.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_LOG = logging.getLogger(__name__)
SHOW_SEED_ENV = "LEAD_STREAM_SHOW_SEED"
_PERTURBATION_STREAM = 0x5E75  # separates the perturbation draws from the plan draws of the same epoch
_LOCALITY_STREAM = 0x10CA  # ... and the locality reordering


@dataclass(frozen=True)
class EpochPlan:
    """The samples of one epoch in serving order (before padding to whole global batches)."""

    rows: np.ndarray  # (E,) int64 manifest row ids
    bucket_idx: np.ndarray  # (E,) int64 index into the bucket names the plan was built with
    fingerprint: str  # sha256 of the arguments and the arrays (16 hex chars)

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def _show_seed(what: str, **fields: object) -> None:
    if os.environ.get(SHOW_SEED_ENV) == "1":
        _LOG.warning("%s %s", what, json.dumps(fields, sort_keys=True))


def resolve_rates(
    bucket_names: Sequence[str], table_rates: Sequence[float], mixture: Mapping[str, float] | None
) -> np.ndarray:
    """Per-bucket rates: the bucket table's rate, overridden by `mixture` for the buckets it names.

    Args:
        bucket_names: bucket names in plan order.
        table_rates: the rate column of the bucket table for each bucket.
        mixture: bucket → rate (LEAD's meaning: multiplier on bucket size); None keeps the table's rates.

    Returns:
        (num_buckets,) float64 rates.

    Raises:
        ValueError: a mixture names an unknown bucket or gives a negative or non-finite rate.
    """
    rates = np.asarray(table_rates, dtype=np.float64).copy()
    for name, rate in (mixture or {}).items():
        if name not in bucket_names:
            raise ValueError(f"mixture names unknown bucket {name!r}; buckets are {list(bucket_names)}")
        if not np.isfinite(rate) or rate < 0:
            raise ValueError(f"mixture rate of bucket {name!r} must be finite and >= 0, got {rate}")
        rates[list(bucket_names).index(name)] = float(rate)
    return rates


def bucket_counts(bucket_sizes: Sequence[int], rates: Sequence[float]) -> np.ndarray:
    """LEAD's per-epoch contribution of each bucket: `int(len(b) * rate_b)` (floor)."""
    return np.array(
        [int(size * rate) for size, rate in zip(bucket_sizes, rates, strict=True)], dtype=np.int64
    )


def epoch_plan(
    bucket_rows: Sequence[np.ndarray],
    rates: Sequence[float],
    *,
    seed: int,
    epoch: int,
    epoch_size: int | None = None,
    with_replacement: bool = False,
) -> EpochPlan:
    """The samples of one epoch: a pure function of (bucket members, rates, seed, epoch, epoch_size).

    Each bucket's draw and the global shuffle come from one generator seeded with `(seed, epoch)`; with
    `with_replacement`, LEAD's draws from `default_rng(seed + epoch)` (module doc), which give the samples
    LEAD's `shuffle(epoch)` gives when the buckets list their members in LEAD's order (sorted routes, frames
    ascending, as the index writes them).

    Args:
        bucket_rows: per bucket, the manifest row ids of its members (a row may be in several buckets).
        rates: per bucket, LEAD's rate (`resolve_rates`).
        seed: run seed.
        epoch: epoch number (>= 0).
        epoch_size: None → Σ_b int(len(b)·rate_b) (LEAD's default); an int > 0 truncates the shuffled
            plan or repeats it cyclically to that length (LEAD's `carla_num_samples`).
        with_replacement: LEAD's exact draws (module doc) instead of permutations plus a partial draw.

    Returns:
        The epoch plan.

    Raises:
        ValueError: the plan would be empty, or an argument is out of range.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if epoch_size is not None and epoch_size <= 0:
        raise ValueError(f"epoch_size must be None or > 0, got {epoch_size}")
    _show_seed(
        "epoch_plan",
        seed=seed,
        epoch=epoch,
        rates=[float(r) for r in rates],
        epoch_size=epoch_size,
        with_replacement=with_replacement,
    )
    rng = np.random.default_rng(seed + epoch) if with_replacement else np.random.default_rng([seed, epoch])
    sizes = [len(rows) for rows in bucket_rows]
    counts = bucket_counts(sizes, rates)
    picked, picked_bucket = [], []
    for bucket, (rows, count) in enumerate(zip(bucket_rows, counts, strict=True)):
        rows = np.asarray(rows, dtype=np.int64)
        if count == 0:
            continue
        if with_replacement:  # LEAD: rng.choice(len(bucket), size=k, replace=k > len(bucket))
            picked.append(rows[rng.choice(len(rows), size=int(count), replace=bool(count > len(rows)))])
        else:
            full, rest = divmod(int(count), len(rows))
            picked.extend(rng.permutation(rows) for _ in range(full))
            if rest:
                picked.append(rows[np.sort(rng.choice(len(rows), size=rest, replace=False))])
        picked_bucket.append(np.full(int(count), bucket, dtype=np.int64))
    if not picked:
        raise ValueError(f"empty epoch plan: bucket sizes {sizes} with rates {list(rates)} select no sample")
    rows = np.concatenate(picked)
    bucket_idx = np.concatenate(picked_bucket)
    order = np.arange(rows.shape[0])
    rng.shuffle(order)  # LEAD: indices = np.arange(n); rng.shuffle(indices) (= rng.permutation(n))
    if epoch_size is not None:  # the shuffled plan truncated or repeated (only those slots gathered)
        order = order[np.arange(epoch_size) % order.shape[0]]
    rows, bucket_idx = rows[order], bucket_idx[order]
    return EpochPlan(
        rows=rows, bucket_idx=bucket_idx, fingerprint=_fingerprint(rows, bucket_idx, seed, epoch)
    )


def sequential_plan(
    bucket_rows: Sequence[np.ndarray], sample_key: np.ndarray, *, max_samples: int | None = None
) -> EpochPlan:
    """Every distinct sample of the buckets once, in key order (route_id, then frame_idx): evaluation's plan.

    Rates are ignored (a held-out set is measured, not re-weighted); a row in several buckets is served once,
    for its first bucket. No randomness: the same manifest always gives the same plan.

    Args:
        bucket_rows: per bucket, the manifest row ids of its members.
        sample_key: (num_samples,) sample keys "<route_id>/<frame_idx:04d>" of the manifest rows.
        max_samples: serve an evenly spaced subset of this many samples (spread over all routes); None = all.

    Returns:
        The plan (bucket_idx = each row's first bucket).

    Raises:
        ValueError: no sample, or max_samples < 1.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be None or >= 1, got {max_samples}")
    rows = np.concatenate([np.asarray(r, dtype=np.int64) for r in bucket_rows]) if bucket_rows else None
    if rows is None or rows.shape[0] == 0:
        raise ValueError("empty evaluation plan: the buckets have no sample in the cache")
    bucket_idx = np.concatenate([np.full(len(r), b, dtype=np.int64) for b, r in enumerate(bucket_rows)])
    rows, first = np.unique(rows, return_index=True)  # first occurrence = the row's first bucket
    bucket_idx = bucket_idx[first]
    order = np.argsort(sample_key[rows], kind="stable")
    rows, bucket_idx = rows[order], bucket_idx[order]
    if max_samples is not None and max_samples < rows.shape[0]:
        pick = np.linspace(0, rows.shape[0] - 1, max_samples).round().astype(np.int64)
        rows, bucket_idx = rows[pick], bucket_idx[pick]
    return EpochPlan(rows=rows, bucket_idx=bucket_idx, fingerprint=_fingerprint(rows, bucket_idx, -1, 0))


def localize(plan: EpochPlan, sample_shard: np.ndarray, *, window: int, seed: int, epoch: int) -> EpochPlan:
    """Reorder a plan so each window of `window` consecutive slots reads from few shards (cold/remote I/O).

    The plan's multiset (so every bucket count) is unchanged. Shards are visited in a seeded random order,
    each shard's planned samples in plan order, and slots are shuffled within each window, as a shard
    shuffle plus a bounded shuffle buffer would. A window then touches about window / samples-per-shard + 1
    shards, at the price of batches drawn from fewer routes. Local (warm) caches do not need it.

    Args:
        plan: the epoch plan (`epoch_plan`).
        sample_shard: (num_samples,) shard index of every manifest row.
        window: slots per window (>= 1), e.g. locality_window * global batch.
        seed: run seed.
        epoch: epoch number.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    rng = np.random.default_rng([seed, epoch, _LOCALITY_STREAM])
    shard_rank = rng.permutation(int(sample_shard.max()) + 1)
    order = np.argsort(shard_rank[sample_shard[plan.rows]], kind="stable")
    window_of = np.arange(order.shape[0]) // window
    order = order[np.lexsort((rng.random(order.shape[0]), window_of))]
    rows, bucket_idx = plan.rows[order], plan.bucket_idx[order]
    return EpochPlan(
        rows=rows, bucket_idx=bucket_idx, fingerprint=_fingerprint(rows, bucket_idx, seed, epoch)
    )


def _fingerprint(rows: np.ndarray, bucket_idx: np.ndarray, seed: int, epoch: int) -> str:
    digest = hashlib.sha256(f"{seed}:{epoch}:".encode())
    digest.update(np.ascontiguousarray(rows, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(bucket_idx, dtype="<i8").tobytes())
    return digest.hexdigest()[:16]


def num_global_batches(plan_len: int, global_batch: int) -> int:
    """Global batches per epoch: ceil(plan_len / global_batch); the last one is padded."""
    return -(-plan_len // global_batch)


def padded_slots(plan_len: int, global_batch: int) -> np.ndarray:
    """Plan position of every slot of the padded epoch: 0..E-1, then 0, 1, ... again up to the last batch."""
    return np.arange(num_global_batches(plan_len, global_batch) * global_batch) % plan_len


def rank_slots(global_batch_idx: int, *, global_batch: int, rank: int, world_size: int) -> np.ndarray:
    """Padded-epoch slot numbers of rank `rank`'s part of global batch `global_batch_idx`."""
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by world_size {world_size}")
    per_rank = global_batch // world_size
    start = global_batch_idx * global_batch + rank * per_rank
    return np.arange(start, start + per_rank)


def read_slots(read: range, *, global_batch: int, rank: int, world_size: int) -> np.ndarray:
    """Padded-epoch slots of rank `rank`'s part of each global batch of `read`, batch after batch."""
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by world_size {world_size}")
    per_rank = global_batch // world_size
    firsts = np.arange(read.start, read.stop, dtype=np.int64) * global_batch + rank * per_rank
    return (firsts[:, None] + np.arange(per_rank)).reshape(-1)


def worker_reads(
    num_batches: int, *, start: int, worker: int, num_workers: int, batches_per_read: int = 1
) -> list[range]:
    """The reads worker `worker` serves, in order, each a range of consecutive global batches: read c covers
    `[start + c·k, start + (c+1)·k)` (the last one cut at `num_batches`), and the worker takes c ≡ worker
    (mod num_workers); `num_workers` 0 is the main process reading every read."""
    k, step = max(batches_per_read, 1), max(num_workers, 1)
    firsts = range(start + worker * k, num_batches, step * k)
    return [range(first, min(first + k, num_batches)) for first in firsts]


def perturbation_draws(num_slots: int, *, prob: float, seed: int, epoch: int) -> np.ndarray:
    """(num_slots,) bool: slot `s` of the padded epoch serves the perturbated variant.

    Draw `s` of a generator seeded with (seed, epoch, stream id), i.e. a pure function of (seed, epoch,
    slot): deterministic and resumable, independent of ranks and workers.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"perturbation probability must be in [0, 1], got {prob}")
    return np.random.default_rng([seed, epoch, _PERTURBATION_STREAM]).random(num_slots) < prob


def sample_weights(
    num_samples: int, member_rows: np.ndarray, member_bucket: np.ndarray, rates: np.ndarray
) -> np.ndarray:
    """Expected draws per epoch of each manifest row: Σ over its bucket memberships of the bucket's rate.

    Args:
        num_samples: manifest rows.
        member_rows: (M,) row id of each bucket membership.
        member_bucket: (M,) bucket index of each membership.
        rates: (num_buckets,) rates.
    """
    return np.bincount(member_rows, weights=np.asarray(rates)[member_bucket], minlength=num_samples)


def shard_weights(sample_shard: np.ndarray, weights: np.ndarray, num_shards: int) -> np.ndarray:
    """Weight of each shard = sum of its samples' weights (expected samples read from it per epoch)."""
    return np.bincount(sample_shard, weights=weights, minlength=num_shards)


def shard_order(
    shard_weights: np.ndarray,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    worker: int,
    num_workers: int,
) -> np.ndarray:
    """The shards one (rank, worker) streams, in a weighted random order (for sequential/cold streaming).

    Bucket rates become sample weights (`sample_weights`: the sum of the rates of a sample's buckets) and
    a shard's weight is the sum of its samples' weights (`shard_weights`). Shards of weight 0 are left out;
    the others are ordered by weighted sampling without replacement (Efraimidis–Spirakis keys
    u^(1/w), seeded by (seed, epoch)) and dealt round-robin to the world_size·num_workers readers.
    The same arguments always give the same order; `LEAD_STREAM_SHOW_SEED=1` logs the seed.

    Args:
        shard_weights: (num_shards,) non-negative weights.
        seed: run seed.
        epoch: epoch number.
        rank: this process's rank.
        world_size: number of ranks.
        worker: this DataLoader worker's id.
        num_workers: workers per rank (0 counts as 1).

    Returns:
        int64 shard indices for this reader.
    """
    weights = np.asarray(shard_weights, dtype=np.float64)
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("shard weights must be finite and >= 0")
    _show_seed("shard_order", seed=seed, epoch=epoch, rank=rank, worker=worker)
    readers = world_size * max(num_workers, 1)
    reader = rank * max(num_workers, 1) + worker
    live = np.flatnonzero(weights > 0)
    u = np.random.default_rng([seed, epoch]).random(weights.shape[0])[live]
    keys = np.log(u) / weights[live]  # log of u^(1/w): larger key first
    ordered = live[np.argsort(-keys, kind="stable")]
    return ordered[reader::readers].astype(np.int64)
