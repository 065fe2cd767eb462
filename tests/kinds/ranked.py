"""A job kind whose ranks talk to each other, for pinning how a cell of several ranks starts, fails and hangs."""

import os
import time
from dataclasses import dataclass

from nfjobs.config import runtime_field

DISTRIBUTED = True


@dataclass(frozen=True)
class Config:
    seed: int = 0
    """Random seed (unused)."""
    fail_rank: int = runtime_field(-1)
    """The rank that raises before the collective (-1: none)."""
    hang_rank: int = runtime_field(-1)
    """The rank that sleeps for five minutes instead of joining the collective (-1: none)."""


def run(cfg: Config, ctx) -> list[dict]:
    import torch
    import torch.distributed as dist

    if ctx.rank == cfg.hang_rank:
        time.sleep(300)
    if ctx.rank == cfg.fail_rank:
        raise ValueError(f"ranked job failing on purpose on rank {ctx.rank}")
    total = torch.tensor([float(ctx.rank + 1)])
    if ctx.world_size > 1:
        dist.all_reduce(total)
    return [{"rank_sum": total.item(), "ranks": ctx.world_size, "master_addr": os.environ.get("MASTER_ADDR", ""),
             "gpu_seen": os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}]
