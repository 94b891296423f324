"""Plain-torch TransFuser-style model (TFv6 layout), CenterNet targets and LEAD's losses."""

from lead_stream.model.losses import LOSS_NAMES, LossWeights, compute_losses
from lead_stream.model.targets import CenterNetTargets, centernet_targets
from lead_stream.model.tfv6 import ModelConfig, TFv6, count_parameters, model_inputs, parameter_breakdown

__all__ = [
    "LOSS_NAMES",
    "CenterNetTargets",
    "LossWeights",
    "ModelConfig",
    "TFv6",
    "centernet_targets",
    "compute_losses",
    "count_parameters",
    "model_inputs",
    "parameter_breakdown",
]
