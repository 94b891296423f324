"""What one `train` call did, as rank 0 saw it: steps, losses, throughput, the newest checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainSummary:
    """What a `train` call did (rank 0's view)."""

    logdir: Path
    phase: str
    steps: int  # global steps done at the end (including earlier runs)
    epochs_completed: int
    start_step: int  # 0, or the step a resumed run started from
    losses: list[tuple[int, float]]  # (step index, global total loss) of the steps this call ran
    gradient_steps_skipped: int
    samples_per_s: float
    data_wait_share: float
    num_parameters: int
    precision: str
    device: str
    checkpoint: Path | None = None  # newest model file written
    validation: dict | None = None  # the last validation's results (`OpenLoopMetrics.compute()`), if any
    validation_step: int | None = None  # the global step it was measured at

    def one_line(self) -> str:
        last = f"{self.losses[-1][1]:.4f}" if self.losses else "n/a"
        return (
            f"{self.phase}: {self.steps} steps ({self.epochs_completed} epochs), last loss {last}, "
            f"{self.samples_per_s:.1f} samples/s ({self.precision} on {self.device}, "
            f"{self.data_wait_share:.1%} waiting for data), "
            f"{self.gradient_steps_skipped} skipped, checkpoint {self.checkpoint}" + self._validation_part()
        )

    def _validation_part(self) -> str:
        if self.validation is None:
            return ""
        from lead_stream.evaluate.metrics import headline

        return f"; val @ step {self.validation_step} on {self.validation['num_samples']} frames: " + headline(
            self.validation
        )
