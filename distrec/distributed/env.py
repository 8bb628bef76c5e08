"""Rank and world size from the one source that is right on every backend.

Under DeepSpeed on CPU, Accelerate's `num_processes`/`process_index` read 1/0
on every rank while torch.distributed knows the truth, so rank-dependent code
(data sharding, rank-0 writes, seeds) asks torch.distributed first.
"""

from __future__ import annotations

import os

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
