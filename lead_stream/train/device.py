"""The requested device, precision and threads → the torch device, autocast dtype and intra-op thread count
of this rank (decided from the device's capabilities and the cores this process may use, never from names)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from lead_stream.core.errors import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """auto → cuda:<local_rank> when CUDA is available, else cpu."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto → bf16 where the device computes it natively, fp16 (+ GradScaler) on other GPUs, fp32 on CPU."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"
    try:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        native_bf16 = torch.cuda.is_bf16_supported()
    return "bf16" if native_bf16 else "fp16"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by the cgroup's CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def resolve_num_threads(requested: int, *, num_workers: int, ranks_on_host: int) -> tuple[int, str]:
    """Intra-op threads of a trainer rank and why: `requested` if > 0, else OMP_NUM_THREADS if set (torchrun
    sets 1 for several ranks per host), else the host's cores split over its ranks, less one per loader worker
    of this rank (each worker decodes on its own core; torch gives every worker 1 thread), at least 1."""
    if requested > 0:
        return requested, "num_threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores = usable_cores()
    threads = max(1, cores // max(ranks_on_host, 1) - num_workers)
    return threads, f"{cores} cores / {ranks_on_host} rank(s) - {num_workers} loader worker(s)"
