"""Scalars and images → TensorBoard event files in the run directory (rank 0), optionally WandB.

`MetricsLogger(enabled=False)` (every rank but 0) does nothing, so the loop logs unconditionally and never
mentions TensorBoard (STYLE E16). WandB is used only when asked for AND installed; otherwise a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np


class MetricsLogger:
    """Writes `log(metrics, step)` scalars and `log_image(tag, image, step)` images."""

    def __init__(
        self,
        logdir: Path,
        *,
        enabled: bool,
        use_wandb: bool = False,
        wandb_project: str = "lead_stream",
        run_config: dict[str, Any] | None = None,
        purge_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self._writer = None
        self._wandb = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(logdir), purge_step=purge_step)
        if use_wandb:
            try:
                import wandb
            except ImportError:
                warnings.warn(
                    "log_wandb=true but wandb is not installed; logging to TensorBoard only", stacklevel=2
                )
            else:
                self._wandb = wandb.init(
                    project=wandb_project, dir=str(logdir), config=run_config, resume="allow"
                )

    def log(self, metrics: dict[str, float], step: int) -> None:
        """One scalar per tag at `step`."""
        if self._writer is None:
            return
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, float(value), global_step=step)
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image at `step`."""
        if self._writer is None:
            return
        self._writer.add_image(tag, image, global_step=step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(image)}, step=step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
