"""Two gloo processes, one batch each: both take the same bi-level step."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from prune.bilevel import BilevelConfig, BilevelOptimizer
from prune.gates import Gates
from prune.groups import build_groups
from prune_tiny_nets import TinySegNet, seg_loss


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_step(rank: int, world: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial model and scores everywhere
        model = TinySegNet()
        gates = Gates(build_groups(model, torch.randn(1, 3, 16, 16), unit=4).groups)
        gates.attach(model)
        optimizer = BilevelOptimizer(model, gates, seg_loss, BilevelConfig(outer_lr=0.1))
        torch.manual_seed(100 + rank)  # different data per process
        batch = lambda: (torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16)))  # noqa: E731
        optimizer.step(batch(), batch())
        state = torch.cat([p.detach().flatten() for p in [*model.parameters(), *gates.scores]])
        results[rank] = state
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters import torch and timm: ~20-40 s on this machine
def test_processes_stay_in_lockstep():
    context = mp.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        mp.start_processes(one_step, args=(2, free_port(), results), nprocs=2, join=True, start_method="spawn")
        first, second = results[0], results[1]
    assert torch.equal(first, second)
