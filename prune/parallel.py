"""Data parallelism of a run (torchrun, one gloo process group): who this process is, and the
few points where the processes must agree. Gradients are averaged in the steps
(`prune.bilevel.average_over_processes`)."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (torchrun), else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def keep_rank0_buffers(model: nn.Module) -> None:
    """BatchNorm statistics saw each process's own batches: every process takes rank 0's."""
    if rank_and_world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def check_same_plan(plan: Any) -> None:
    """Raise if the processes chose different plans (their gates diverged)."""
    world = rank_and_world()[1]
    if world > 1:
        plans: list[Any] = [None] * world
        dist.all_gather_object(plans, plan)
        if any(p != plan for p in plans):
            raise RuntimeError("data-parallel processes chose different plans: their gates diverged")


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if rank_and_world()[1] > 1:
        dist.barrier()
