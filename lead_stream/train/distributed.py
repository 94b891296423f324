"""torchrun environment → rank info and a process group; rank-0 printing (nanochat's get_dist_info/print0).

`dist_info()` is the only place that reads RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE. `init_distributed()` picks nccl
when the process drives a CUDA device and gloo on CPU; multi-node runs only need torchrun's
--nnodes/--node-rank/--rdzv-endpoint flags (MASTER_ADDR/PORT come from torchrun).
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # ranks on this host (they share its memory and cores)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank, world size and local rank from torchrun's environment (1 process when unset)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )


def init_distributed(info: DistInfo, device: torch.device, *, timeout_min: float = 120.0) -> None:
    """Join the process group when world_size > 1 (nccl on CUDA, gloo otherwise); no-op for one process."""
    if not info.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(minutes=timeout_min),
    )


def destroy_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_rank_zero() -> bool:
    """True on rank 0 (and without a process group)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def log0(*args: object) -> None:
    """print() on rank 0 only (stderr, so stdout stays clean for summaries)."""
    if is_rank_zero():
        print(*args, file=sys.stderr, flush=True)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place; returns the tensor); identity without a process group."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (in place); identity without a process group."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def barrier() -> None:
    """Wait for every rank; no-op without a process group."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` in DistributedDataParallel without the warnings every run would print: buffers are not synced
    in forward (every rank holds the same ones: same seed or same checkpoint), and gradients are views of
    the all-reduce buckets (no stride mismatch copies)."""
    options = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    sync = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    )
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True,
        **sync,
    )


def broadcast_text(text: str) -> str:
    """Rank 0's `text` on every rank (identity without a process group)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return text
    holder = [text]
    dist.broadcast_object_list(holder, src=0)
    return str(holder[0])
