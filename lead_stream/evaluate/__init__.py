"""Model outputs on held-out frames → open-loop metrics, during training (validation) and by `lead-stream eval`.

`adapter` is the one place that reads the model's output dict; `metrics` and `detection` turn adapted
predictions and labels into DDP-mergeable sums and the results dict.
"""

from lead_stream.evaluate.adapter import Labels, Predictions, labels_from_batch, predictions_from_outputs
from lead_stream.evaluate.metrics import OpenLoopMetrics, flat_scalars

__all__ = [
    "Labels",
    "OpenLoopMetrics",
    "Predictions",
    "flat_scalars",
    "labels_from_batch",
    "predictions_from_outputs",
]
