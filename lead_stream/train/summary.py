"""What one `train` call did, as rank 0 saw it: the run, its data, steps, losses, throughput, the newest
checkpoint; `one_line()` is the run's one summary line."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path


def plural(count: int, word: str) -> str:
    """`1 epoch`, `2 epochs`."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


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
    run_id: str = ""  # the run's id (kept by its resumes; in every resume file)
    pipeline_id: str | None = None  # the cache read (None: an injected loader)
    collection: str | None = None  # the bucket collection read
    num_samples: int = 0  # samples (all ranks) of the steps this call ran
    wall_s: float = 0.0  # wall time of this call's loop
    num_threads: int = 0  # torch threads per rank
    rank: int = 0  # the rank that returned it (only rank 0 prints it)

    def one_line(self) -> str:
        last = f"{self.losses[-1][1]:.4f}" if self.losses else "n/a"
        tail = [loss for _, loss in self.losses[-10:]]
        mean = f" (mean of the last {len(tail)}: {sum(tail) / len(tail):.4f})" if len(tail) > 1 else ""
        data = ""
        if self.pipeline_id is not None:
            data = f", cache {self.pipeline_id}, collection {self.collection!r}"
        resumed = f" from step {self.start_step}" if self.start_step else ""
        return (
            f"{self.phase} run {self.run_id}: {plural(self.steps, 'step')}{resumed} "
            f"({plural(self.epochs_completed, 'epoch')}), {plural(self.num_samples, 'sample')} in "
            f"{self.wall_s:.1f} s{data}; last loss {last}{mean}; {self.samples_per_s:.1f} samples/s "
            f"({self.precision} on {self.device}, {plural(self.num_threads, 'thread')}, "
            f"{self.data_wait_share:.1%} waiting for data), {self.gradient_steps_skipped} skipped, "
            f"checkpoint {self.checkpoint}" + self._validation_part()
        )

    def _validation_part(self) -> str:
        if self.validation is None:
            return ""
        from lead_stream.evaluate.metrics import headline

        return f"; val @ step {self.validation_step} on {self.validation['num_samples']} frames: " + headline(
            self.validation
        )


class ProgressLines:
    """The progress bar's stand-in when stderr is not a terminal (logs, batch jobs): one line per 5 % of the
    run or per minute, whichever comes first."""

    def __init__(self, total_steps: int, *, enabled: bool, every_s: float = 60.0) -> None:
        self.total, self.enabled, self.every_s = total_steps, enabled, every_s
        self.every_steps = max(1, total_steps // 20)
        self.last_t, self.samples = time.perf_counter(), 0.0

    def update(self, step: int, epoch: int, loss: float, samples: float) -> None:
        """After global step `step` (1-based count) of `epoch` with this step's loss and samples."""
        if not self.enabled:
            return
        self.samples += samples
        now = time.perf_counter()
        if step % self.every_steps and step != self.total and now - self.last_t < self.every_s:
            return
        rate = self.samples / max(now - self.last_t, 1e-9)
        print(
            f"step {step}/{self.total} ({step / max(self.total, 1):.0%}), epoch {epoch}, loss {loss:.4f}, "
            f"{rate:.1f} samples/s",
            file=sys.stderr,
            flush=True,
        )
        self.last_t, self.samples = now, 0.0
