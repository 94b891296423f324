"""Plain-torch TransFuser-style model (TFv6 layout), CenterNet targets and LEAD's losses."""

from lead_stream.model.losses import LOSS_NAMES, LossWeights, compute_losses
from lead_stream.model.targets import CenterNetTargets, centernet_targets
from lead_stream.model.tfv6 import TFv6, ModelConfig, count_parameters, model_inputs, parameter_breakdown

__all__ = [
    "LOSS_NAMES",
    "LossWeights",
    "compute_losses",
    "CenterNetTargets",
    "centernet_targets",
    "TFv6",
    "ModelConfig",
    "count_parameters",
    "model_inputs",
    "parameter_breakdown",
]
