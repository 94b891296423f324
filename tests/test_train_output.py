"""Output a person can read: the config goes to config.json and one line says where, one summary line,
progress as periodic lines when stderr is not a terminal, `--print-config` lists every key (issue 13, point 8)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from train_helpers import TINY
from typer.testing import CliRunner

from lead_stream.cli.main import app


def test_a_run_prints_where_its_config_went_and_one_summary_line_13(
    sharded_root: Path, tmp_path: Path
) -> None:
    logdir = tmp_path / "run"
    args = [f"carla_root={sharded_root}", f"logdir={logdir}", "batch_size=2", "epoch_size=8", "epochs=1"]
    tiny = [t for t in TINY if not t.startswith("progress=")]  # progress on: stderr is no terminal here
    result = CliRunner().invoke(app, ["train", "pretrain", *args, *tiny, "visualize_training=false"])
    assert result.exit_code == 0, result.output
    assert '"carla_root"' not in result.output  # the config is not dumped on the terminal ...
    assert json.loads((logdir / "config.json").read_text())["batch_size"] == 2  # ... but saved
    assert f"config {logdir / 'config.json'}, cache " in result.output
    assert re.search(r"step 2/4 \(50%\), epoch 0, loss \d", result.output)  # lines, not a bar
    assert "\r" not in result.output and "it/s" not in result.output
    summary = [line for line in result.output.splitlines() if ": 4 steps (1 epoch), 8 samples in " in line]
    assert len(summary) == 1 and "collection 'pretrain'" in summary[0] and "last loss" in summary[0]

    result = CliRunner().invoke(app, ["train", "posttrain", "--print-config", "batch_size=8"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["batch_size"] == 8 and printed["use_planning_decoder"] is True
    assert {"num_threads", "overwrite", "check_memory", "cache_dir"} <= set(printed)
