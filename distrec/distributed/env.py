"""Rank and world size from the one source that is right on every backend.

Under DeepSpeed on CPU, Accelerate's `num_processes`/`process_index` read 1/0
on every rank while torch.distributed knows the truth, so rank-dependent code
(data sharding, rank-0 writes, seeds) asks torch.distributed first.
"""

from __future__ import annotations

import os

import torch.distributed as dist

# The launch/sharding packages whose versions every run records (metrics.json).
BACKEND_PACKAGES = ("accelerate", "deepspeed")


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): torch.distributed's once a group exists, else RANK/WORLD_SIZE."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# What torch.distributed's backends say when a peer died or a collective ran past
# the process group's timeout (gloo raises plain RuntimeErrors with these).
_PEER_FAILURE = (
    "connection closed by peer",
    "connection reset by peer",
    "pair closure",
    "timed out",
    "timeout",
    "nccl",
    "gloo",
)


def is_peer_failure(err: BaseException) -> bool:
    """A collective failed because another rank died, hung, or timed out."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    return isinstance(err, RuntimeError) and any(s in str(err).lower() for s in _PEER_FAILURE)


def peer_failure_message(err: BaseException, timeout_s: int) -> str:
    """What a surviving rank says about a failed collective `err`, and how to continue."""
    rank, world = rank_and_world()
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    return (
        f"rank {rank} of {world}: a collective with the other ranks failed ({first}). Another "
        f"rank died or did not respond within distributed.timeout_s={timeout_s}s; its own log "
        f"names the cause. Continue from the last complete checkpoint with --resume auto."
    )
