"""`lead-stream eval` (issue 14): two checkpoints on the same frames, metrics.json, and the HTML report as a
real headless Chromium renders it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from train_helpers import TINY
from typer.testing import CliRunner

from lead_stream.cli.main import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VAL = ["val_collection=town13_heldout_posttrain", "val_buckets=town13"]


@pytest.fixture(scope="module")
def two_checkpoints(heldout_root, tmp_path_factory):
    """A pretrain and a posttrain checkpoint of a tiny model, both runs validating on Town13."""
    logdir = tmp_path_factory.mktemp("runs")
    common = [f"carla_root={heldout_root}", "batch_size=4", "epoch_size=4", "epochs=1", *VAL, *TINY]
    runner = CliRunner()
    pre = runner.invoke(app, ["train", "pretrain", f"logdir={logdir / 'pretrain'}", *common])
    assert pre.exit_code == 0, pre.output
    assert "val @ step 1" in pre.output
    post = runner.invoke(
        app,
        [
            "train",
            "posttrain",
            f"logdir={logdir / 'posttrain'}",
            f"load_file={logdir / 'pretrain' / 'model_0000.pth'}",
            *common,
        ],
    )
    assert post.exit_code == 0, post.output
    return logdir / "pretrain" / "model_0000.pth", logdir / "posttrain" / "model_0000.pth"


@pytest.fixture(scope="module")
def report(two_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = CliRunner().invoke(
        app, ["eval", *map(str, two_checkpoints), "--out", str(out), "--worst-k", "2"]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_eval_compares_checkpoints_on_the_same_frames_14(report):
    out, output = report
    assert "pretrain/model_0000" in output and "posttrain/model_0000" in output
    assert re.search(r"waypoint ADE \(m\)\s+n/a\s+\d", output)  # the pretrain model has no planner
    document = json.loads((out / "metrics.json").read_text())
    assert document["collection"] == "town13_heldout_posttrain" and document["buckets"] == ["town13"]
    pre, post = document["checkpoints"]
    assert pre["metrics"]["num_samples"] == post["metrics"]["num_samples"] > 0
    assert "planning" not in pre["metrics"] and post["metrics"]["planning"]["fde_m"] > 0
    assert [w["key"] for w in post["worst_frames"]] and all(
        "Town13" in w["key"] for w in post["worst_frames"]
    )
    assert post["worst_frames"][0]["error"] >= post["worst_frames"][1]["error"]


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)"
)
def test_report_renders_every_chart_and_picture_in_headless_chromium_14(report, tmp_path):
    out, _ = report
    url = (out / "report.html").resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, *profile, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'data-rendered="([^"]+)"', dom.stdout)
    assert match, "the page's load script did not run"
    rendered = json.loads(match.group(1).replace("&quot;", '"'))
    assert rendered["images"] == rendered["decoded"] == 2 * 2 * 2  # 2 checkpoints x 2 frames x camera + BEV
    assert rendered["charts"] >= 6  # IoU x 2, box AP x 2, radar AP, ADE by horizon, displacement
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, *profile, "--window-size=1200,1600", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, bars and pictures, not a blank page


def test_eval_of_a_missing_checkpoint_exits_2_naming_the_file_14(tmp_path):
    missing = tmp_path / "model_0007.pth"
    done = subprocess.run(
        [sys.executable, "-m", "lead_stream.cli.main", "eval", str(missing)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {missing}: no such checkpoint file")


def test_eval_loads_lead_preset_checkpoints_14(tmp_path):
    """LEAD-layout weights load into preset lead: bare (no config.json) and from a LEAD-written config.json."""
    import torch

    from lead_stream.core.errors import LeadFormatError
    from lead_stream.evaluate.checkpoints import load_model
    from lead_stream.model import LeadTFv6, ModelConfig, build_model

    bare = tmp_path / "bare" / "model_0000.pth"
    bare.parent.mkdir()
    model = build_model(ModelConfig(preset="lead"), use_planning_decoder=True)
    torch.save(model.state_dict(), bare)
    loaded, run = load_model(bare)  # default preset lead
    assert isinstance(loaded, LeadTFv6) and run == {}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

    lead_run = tmp_path / "lead_run" / "model_0000.pth"
    lead_run.parent.mkdir()
    narrow = build_model(ModelConfig(preset="lead", token_dim=64), use_planning_decoder=True)
    torch.save(narrow.state_dict(), lead_run)
    (lead_run.parent / "config.json").write_text(json.dumps({"transfuser_token_dim": 64, "compile": False}))
    loaded, _ = load_model(lead_run)
    assert loaded.config.token_dim == 64
    with pytest.raises(LeadFormatError, match="do not fit"):  # 64-wide weights, default 256-wide model
        load_model(_without_config(lead_run, tmp_path))


def _without_config(checkpoint, tmp_path):
    """A copy of `checkpoint` with no config.json beside it (so the default preset's widths are used)."""
    target = tmp_path / "no_config" / checkpoint.name
    target.parent.mkdir()
    shutil.copy(checkpoint, target)
    return target
