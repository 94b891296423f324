"""Stage 5, train: `Batch`es (`loader`) → trained TFv6 checkpoints, TensorBoard logs and config.json.

`train(resolve_config(pretrain_config(), overrides))` runs one phase: `config` (every key, presets,
overrides), `trainer` (the loop), `checkpoint` (LEAD-named files and resume state), `device` (device and
precision), `distributed` (torchrun set-up), `metrics` (TensorBoard), `visualize` (BEV and camera images).
"""

from lead_stream.train.config import TrainConfig, posttrain_config, pretrain_config, resolve_config
from lead_stream.train.summary import TrainSummary
from lead_stream.train.trainer import Trainer, train

__all__ = [
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "posttrain_config",
    "pretrain_config",
    "resolve_config",
    "train",
]
