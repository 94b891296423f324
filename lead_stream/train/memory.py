"""A model + batch size + device → the memory one training step will need, checked before the first step.

The estimate is measured, not guessed: one forward pass on a single random sample (`random_batch(1)`,
under the run's autocast) records the bytes autograd saves for backward (`saved_tensors_hooks`, each
storage once); a step of B samples per rank needs B times that (x `BACKWARD_FACTOR` for the gradients of
the activations that backward holds at its peak), plus gradients and AdamW's amsgrad state
(4 + 12 bytes per parameter), plus `LOADER_WORKER_BYTES` per loader worker on the host. It is compared with
what the device has free now (CUDA: `mem_get_info`; CPU: MemAvailable and the cgroup limit, shared by the
ranks of this host), and a step that would not fit stops the run with the numbers and the keys to change,
instead of an out-of-memory kill.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lead_stream.core.errors import ConfigError
from lead_stream.model import model_inputs
from lead_stream.train.config import TrainConfig
from lead_stream.train.distributed import DistInfo, all_reduce_sum, log0

GIB = float(1 << 30)
OPTIMIZER_BYTES_PER_PARAM = 16  # fp32 gradient + AdamW exp_avg, exp_avg_sq and amsgrad's max_exp_avg_sq
LOADER_WORKER_BYTES = 512 << 20  # host memory of one loader worker (its interpreter, open shards, batches)
HEADROOM = 0.9  # use at most this share of the free memory
BACKWARD_FACTOR = (
    1.3  # peak of a step / saved activations (full model, CPU, batch 2: 4.2 GiB measured vs 3.2)
)


@dataclass(frozen=True)
class MemoryEstimate:
    """What one step needs and what the device has, in bytes."""

    device: str
    per_sample_bytes: int  # activations autograd keeps for one sample (x BACKWARD_FACTOR)
    batch_per_rank: int
    state_bytes: int  # gradients + optimizer state
    host_bytes: int  # loader workers (CPU devices only; their share of the host)
    available_bytes: int  # free on the device now, for this rank

    @property
    def step_bytes(self) -> int:
        return self.per_sample_bytes * self.batch_per_rank + self.state_bytes + self.host_bytes

    @property
    def fits(self) -> bool:
        return self.step_bytes <= HEADROOM * self.available_bytes

    def max_batch_per_rank(self) -> int:
        """The largest per-rank batch that fits (0: not even one sample)."""
        room = HEADROOM * self.available_bytes - self.state_bytes - self.host_bytes
        return max(0, int(room // max(self.per_sample_bytes, 1)))

    def one_line(self) -> str:
        return (
            f"memory: a step needs ~{self.step_bytes / GIB:.1f} GiB on {self.device} "
            f"({self.per_sample_bytes / GIB:.2f} GiB activations per sample x {self.batch_per_rank}, "
            f"{self.state_bytes / GIB:.2f} GiB gradients + AdamW state"
            + (f", {self.host_bytes / GIB:.1f} GiB loader workers" if self.host_bytes else "")
            + f"); {self.available_bytes / GIB:.1f} GiB free"
        )


def saved_activation_bytes(model: nn.Module, inputs: dict, *, device: torch.device, amp_dtype) -> int:
    """Bytes autograd saves for backward in one forward pass of `model` on `inputs` (each storage once)."""
    seen: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
        return tensor

    model.train()
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
    ):
        outputs = model(**inputs)
    del outputs
    return int(sum(seen.values()) * BACKWARD_FACTOR)


def available_bytes(device: torch.device, *, ranks_on_host: int = 1) -> int:
    """Free memory for one rank: CUDA free bytes, or the host's available memory split over its ranks."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_bytes() // max(ranks_on_host, 1)


def host_available_bytes() -> int:
    """MemAvailable of /proc/meminfo, capped by the cgroup's memory limit (what a container may still use)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text != "max" and int(limit_text) < (1 << 60):
                room = int(limit_text) - int(Path(usage_file).read_text().strip())
                available = room if available is None else min(available, room)
            break
        except (OSError, ValueError):
            continue
    if available is None:
        import os

        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(available)


def check_fits(estimate: MemoryEstimate, *, preset: str, world_size: int) -> None:
    """Raise a `ConfigError` naming the numbers and the keys to change when the step does not fit."""
    if estimate.fits:
        return
    fitting = estimate.max_batch_per_rank()
    if estimate.device == "cpu" and preset != "compact":
        change = "model.preset=compact batch_size=4"
    elif fitting >= 1:
        change = f"batch_size={fitting * world_size} (the largest global batch that fits)"
    else:
        change = "model.preset=compact batch_size=4" if preset != "compact" else "a device with more memory"
    raise ConfigError(
        f"{estimate.one_line()}: it would not fit (at most {HEADROOM:.0%} of the free memory is used); "
        f"change {change}, or set check_memory=false to try anyway"
    )


def check_step_memory(
    model: nn.Module, *, config: TrainConfig, device: torch.device, precision: str, info: DistInfo
) -> MemoryEstimate:
    """Measure what a step of `config` needs on `device` (one probe sample, the training RNG untouched) and
    raise `ConfigError` on every rank if it cannot fit on one of them.

    Raises:
        ConfigError: the step would not fit (the numbers and the keys to change).
    """
    from lead_stream.model.random_batch import random_batch
    from lead_stream.train.device import AMP_DTYPES

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        per_sample = saved_activation_bytes(
            model,
            model_inputs(random_batch(1).to(device)),
            device=device,
            amp_dtype=AMP_DTYPES.get(precision),
        )
    model.zero_grad(set_to_none=True)
    on_cpu = device.type == "cpu"
    estimate = MemoryEstimate(
        device=device.type,
        per_sample_bytes=per_sample,
        batch_per_rank=max(1, config.batch_size // info.world_size),
        state_bytes=OPTIMIZER_BYTES_PER_PARAM * sum(p.numel() for p in model.parameters() if p.requires_grad),
        host_bytes=config.num_workers * LOADER_WORKER_BYTES if on_cpu else 0,
        available_bytes=available_bytes(device, ranks_on_host=info.local_world_size if on_cpu else 1),
    )
    failing = all_reduce_sum(torch.tensor([0.0 if estimate.fits else 1.0], device=device))
    check_fits(estimate, preset=config.model.preset, world_size=info.world_size)
    if float(failing[0]) > 0:
        raise ConfigError(f"{estimate.one_line()}; another rank's step would not fit (see its message)")
    log0(estimate.one_line())
    return estimate
