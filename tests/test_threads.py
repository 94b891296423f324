"""Trainer threads fit the machine: num_threads=, else OMP_NUM_THREADS, else cores / ranks - loader workers;
the run summary says what it used (issue 13, point 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import TINY

from lead_stream.model.random_batch import FixedBatchLoader, random_batch
from lead_stream.train import pretrain_config, resolve_config, train
from lead_stream.train.device import resolve_num_threads, usable_cores


def test_default_threads_leave_a_core_to_each_loader_worker_13(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = usable_cores()
    assert resolve_num_threads(0, num_workers=0, ranks_on_host=1)[0] == cores
    assert resolve_num_threads(0, num_workers=cores, ranks_on_host=1)[0] == 1  # never 0
    assert resolve_num_threads(0, num_workers=1, ranks_on_host=2)[0] == max(1, cores // 2 - 1)
    assert resolve_num_threads(3, num_workers=8, ranks_on_host=4) == (3, "num_threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets for several ranks per host
    assert resolve_num_threads(0, num_workers=0, ranks_on_host=1) == (1, "OMP_NUM_THREADS")


def test_the_run_applies_its_threads_and_says_so_13(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        config = resolve_config(pretrain_config(), [f"logdir={tmp_path}", "epochs=1", *TINY, "num_threads=1"])
        summary = train(config, loader=FixedBatchLoader([random_batch(2)], steps_per_epoch=1))
        assert torch.get_num_threads() == 1 and summary.num_threads == 1
        assert "1 thread," in summary.one_line() and "(1 epoch)" in summary.one_line()
    finally:
        torch.set_num_threads(before)
