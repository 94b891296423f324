"""Run-length coding of rasters: exact round trips, long runs, and the batch expansion on a device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lead_stream.core import runs
from lead_stream.core.batch import Batch, RunCoded

RNG = np.random.default_rng(3)


@pytest.mark.parametrize(
    "raster",
    [
        pytest.param(np.repeat(RNG.integers(0, 10, (48, 1), dtype=np.uint8), 1152, axis=1), id="row-bands"),
        pytest.param(RNG.integers(0, 6, (320, 384), dtype=np.uint8), id="noise"),
        pytest.param(np.zeros((384, 1152), np.uint8), id="one-long-run"),
        pytest.param(np.full((1, 1), 7, np.uint8), id="one-pixel"),
    ],
)
def test_runs_round_trip_exactly_and_split_long_runs(raster):
    values, lengths = runs.encode_runs(raster)
    assert values.dtype == np.uint8 and lengths.dtype == np.uint16 and (lengths > 0).all()
    assert int(lengths.sum(dtype=np.int64)) == raster.size
    np.testing.assert_array_equal(runs.expand_runs(values, lengths, raster.shape), raster)
    if raster.size > runs.MAX_RUN and len(np.unique(raster)) == 1:
        assert len(values) == -(-raster.size // runs.MAX_RUN)


def test_lengths_split_into_short_bytes_and_long_values_and_join_back():
    lengths = np.array([1, 254, 255, 256, 65535, 3, 300], np.uint16)
    short, long = runs.split_lengths(lengths)
    assert short.dtype == np.uint8 and short.tolist() == [1, 254, 255, 255, 255, 3, 255]
    assert long.dtype == np.uint16 and long.tolist() == [255, 256, 65535, 300]
    joined = runs.join_lengths(short, long)
    assert joined.dtype == np.int32 and joined.tolist() == lengths.tolist()
    with pytest.raises(ValueError, match="4 long-run markers but 3"):
        runs.join_lengths(short, long[:3])


def test_expansion_rejects_runs_that_do_not_cover_the_raster():
    values, lengths = runs.encode_runs(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="cover 16 pixels, expected 20"):
        runs.expand_runs(values, lengths, (4, 5))


def test_a_batch_of_runs_expands_in_one_call_and_to_moves_it_dense():
    rasters = [RNG.integers(0, 3, (5, 7), dtype=np.uint8) for _ in range(3)]
    coded = [runs.encode_runs(r) for r in rasters]
    values = torch.from_numpy(np.concatenate([v for v, _ in coded]))
    lengths = torch.from_numpy(np.concatenate([n for _, n in coded]).astype(np.int32))
    batch_runs = RunCoded(values, lengths, (3, 5, 7))
    np.testing.assert_array_equal(batch_runs.expand().numpy(), np.stack(rasters))
    assert batch_runs.to("cpu").expand().shape == (3, 5, 7)
    with pytest.raises(ValueError, match="expected"):
        RunCoded(values, lengths, (3, 5, 8)).expand()


def test_batch_dense_and_to_expand_every_run_coded_field():
    from lead_stream.model.random_batch import random_batch

    dense = random_batch(2, seed=0)
    coded = {}
    for name in ("lidar_bev", "semantic", "bev_semantic"):
        array = getattr(dense, name).numpy()
        pairs = [runs.encode_runs(a) for a in array]
        coded[name] = RunCoded(
            torch.from_numpy(np.concatenate([v for v, _ in pairs])),
            torch.from_numpy(np.concatenate([n for _, n in pairs]).astype(np.int32)),
            tuple(array.shape),
        )
    batch = Batch(**{**dense.__dict__, **coded})
    for expanded in (batch.dense(), batch.to("cpu")):
        for name in coded:
            assert torch.equal(getattr(expanded, name), getattr(dense, name)), name
