"""torchrun integration: process group from env vars, rank helpers, cross-rank reductions.

`torchrun --nproc_per_node N -m stages.<name>` sets WORLD_SIZE/RANK/LOCAL_RANK; without them
everything runs as a single process and these helpers are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    world_size = launched_world_size()
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info


def current() -> DistInfo:
    """Rank info of the running process group (single process when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK under torchrun; CPU stays CPU."""
    if device.type == "cuda" and info.world_size > 1:
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return device


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over ranks (identity in a single process)."""
    if current().world_size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if current().world_size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BN running stats) to all ranks.

    DDP broadcasts them before each forward, so after the last step every rank holds its own
    batch's statistics; this makes all replicas identical to the checkpointed one.
    """
    if current().world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if current().world_size > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
