"""Config overrides (STYLE E4): typed parsing, dotted keys, errors, JSON round trip, CLI exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lead_stream.core.config import apply_overrides, from_dict, to_dict
from lead_stream.core.errors import ConfigError
from lead_stream.train import TrainConfig, posttrain_config, pretrain_config, resolve_config


def test_overrides_parse_each_annotation_and_dotted_keys():
    cfg = apply_overrides(
        pretrain_config(),
        [
            "epochs=3",
            "lr=1e-4",
            "use_planning_decoder=true",
            "logdir=/tmp/run",
            "load_file=none",
            "model.preset=compact",
            "model.widths=8,16,32,64",
            "model.image_size=[48,144]",
            "precision=bf16",
            'mixture={"pretrain": 2.0}',
            "loss_weights.loss_depth=0.5",
            "epoch_size=none",
            "batch_size=1_024",
        ],
    )
    assert cfg.epochs == 3 and cfg.lr == 1e-4 and cfg.use_planning_decoder is True
    assert cfg.logdir == Path("/tmp/run") and cfg.load_file is None and cfg.epoch_size is None
    assert cfg.model.preset == "compact" and cfg.model.widths == (8, 16, 32, 64)
    assert cfg.model.image_size == (48, 144) and cfg.precision == "bf16" and cfg.batch_size == 1024
    assert cfg.mixture == {"pretrain": 2.0} and cfg.loss_weights.loss_depth == 0.5
    assert pretrain_config().epochs == 31  # the input config is untouched (frozen)


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("bogus=1", "'bogus'"),
        ("batchsize=4", "did you mean batch_size"),
        ("model.widht=3", "did you mean model.widths"),
        ("epochs=three", "epochs='three': expected int"),
        ("use_planning_decoder=maybe", "expected bool"),
        ("precision=fp8", "one of auto|bf16|fp16|fp32"),
        ("model.widths=8,16", "widths needs 4 stages"),
        ("epochs=0", "epochs"),
        ("model=compact", "is a section"),
        ("epochs", "expected key=value"),
    ],
    ids=[
        "unknown",
        "typo",
        "nested-typo",
        "bad-int",
        "bad-bool",
        "bad-literal",
        "post-init",
        "range",
        "section",
        "no-equals",
    ],
)
def test_bad_overrides_raise_config_error_naming_the_key(token, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        apply_overrides(pretrain_config(), [token])
    assert fragment in str(info.value)


def test_to_dict_is_json_and_round_trips():
    cfg = apply_overrides(
        posttrain_config(Path("a/model_0030.pth")), ["model.preset=full", "model.widths=8,16,32,64", "seed=3"]
    )
    data = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(TrainConfig, data) == cfg


def test_posttrain_inherits_config_json_next_to_load_file_and_cli_wins(tmp_path):
    pre = apply_overrides(pretrain_config(), ["batch_size=16", "epochs=5", "model.preset=compact", "lr=1e-3"])
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.json").write_text(json.dumps(to_dict(pre)))
    cfg = resolve_config(
        posttrain_config(),
        [f"load_file={tmp_path}/pre/model_0030.pth", f"logdir={tmp_path}/post", "epochs=2"],
    )
    assert cfg.batch_size == 16 and cfg.model.preset == "compact" and cfg.lr == 1e-3  # inherited
    assert cfg.epochs == 2 and cfg.logdir == tmp_path / "post"  # overridden
    assert cfg.use_planning_decoder and cfg.load_file == tmp_path / "pre" / "model_0030.pth"  # phase


def test_cli_bad_override_exits_2_naming_the_key():
    done = subprocess.run(
        [sys.executable, "-m", "lead_stream.cli.main", "train", "pretrain", "bogus=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "bogus" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "lead_stream.cli.main", "train", "posttrain", "epochs=x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "epochs" in done.stderr
