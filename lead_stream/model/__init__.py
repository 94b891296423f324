"""Batch tensors → TFv6 outputs and LEAD's losses: LEAD's own TFv6 (`LeadTFv6`, preset lead), our GroupNorm
variants (`TFv6`, presets full / compact), CenterNet targets and the loss functions."""

from lead_stream.model.lead_tfv6 import LeadTFv6, build_model
from lead_stream.model.losses import LOSS_NAMES, LossWeights, compute_losses
from lead_stream.model.targets import CenterNetTargets, centernet_targets
from lead_stream.model.tfv6 import ModelConfig, TFv6, count_parameters, model_inputs, parameter_breakdown

__all__ = [
    "LOSS_NAMES",
    "CenterNetTargets",
    "LeadTFv6",
    "LossWeights",
    "ModelConfig",
    "TFv6",
    "build_model",
    "centernet_targets",
    "compute_losses",
    "count_parameters",
    "model_inputs",
    "parameter_breakdown",
]
