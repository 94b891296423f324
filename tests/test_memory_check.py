"""A step that cannot fit stops the run before anything is written, naming the numbers and the keys to
change (issue 13, point 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import TINY

from lead_stream.core.errors import ConfigError
from lead_stream.model.random_batch import FixedBatchLoader, random_batch
from lead_stream.train import pretrain_config, resolve_config, train
from lead_stream.train.memory import HEADROOM, host_available_bytes

HUGE_BATCH = 1 << 22  # ~4 M samples per step: more than any host has


def _run(logdir: Path, *extra: str):
    config = resolve_config(pretrain_config(), [f"logdir={logdir}", "epochs=1", *TINY, *extra])
    return train(config, loader=FixedBatchLoader([random_batch(2, seed=0)], steps_per_epoch=1))


def test_a_step_too_large_for_the_host_stops_before_the_first_step_13(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    with pytest.raises(ConfigError) as raised:
        _run(logdir, f"batch_size={HUGE_BATCH}")
    message = str(raised.value)
    assert "a step needs ~" in message and "GiB free" in message and "would not fit" in message
    assert "batch_size=" in message and "check_memory=false" in message
    fitting = int(message.split("change batch_size=")[1].split()[0])
    assert 1 <= fitting < HUGE_BATCH
    assert not logdir.exists()  # nothing written: the same logdir works once the keys are fixed
    # the full preset on a CPU: LEAD's own keys give the README's CPU keys
    with pytest.raises(ConfigError, match=r"change model\.preset=compact batch_size=4"):
        _run(logdir, "model.preset=full", f"batch_size={HUGE_BATCH}")
    assert _run(logdir, "batch_size=2").steps == 1


def test_the_free_memory_is_what_the_host_reports_13() -> None:
    meminfo = Path("/proc/meminfo").read_text()
    available = int(next(line for line in meminfo.splitlines() if line.startswith("MemAvailable")).split()[1])
    assert 0 < host_available_bytes() <= available * 1024 * 1.05
    assert 0 < HEADROOM < 1
