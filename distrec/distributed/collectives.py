"""Collectives over the ranks of a run; each is a no-op (or the local answer) when alone.

torch.distributed is asked directly rather than Accelerate: under DeepSpeed on CPU,
Accelerate believes every rank runs alone (see distrec.distributed.env).
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world_size() -> int:
    """The number of ranks in the default process group (1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _together() -> bool:
    return world_size() > 1


def gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t` [n_r, ...] (n_r may differ per rank) as detached CPU tensors, in rank
    order."""
    if not _together():
        return [t]
    return gather_objects(t.detach().cpu())


def gather_objects(value: T) -> list[T]:
    """Every rank's `value` (any picklable object), in rank order."""
    if not _together():
        return [value]
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, value)
    return parts


def gather_with_grad(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's rows `t` [n_r, ...] concatenated to [sum n_r, ...] in rank order, plus the
    offset of this rank's rows; only the local rows keep their gradient."""
    if not _together():
        return t, 0
    rank = dist.get_rank()
    parts = gather_tensors(t)
    offset = sum(p.shape[0] for p in parts[:rank])
    parts[rank] = t
    return torch.cat([p.to(t.device, t.dtype) for p in parts]), offset


def barrier() -> None:
    """Wait until every rank got here."""
    if _together():
        dist.barrier()


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The scalar `value` summed over every rank: a 0-d float64 CPU tensor, detached (float64
    so that sums of float32 values stay exact, whatever the grouping)."""
    value = value.detach().double().reshape(1).cpu()
    if _together():
        dist.all_reduce(value)
    return value[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is set on any rank (a decision all ranks take together,
    so none leaves the others waiting in a collective)."""
    value = torch.tensor([1.0 if flag else 0.0])
    if _together():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(value: T, src: int = 0) -> T:
    """Rank `src`'s `value` (any picklable object) on every rank; other ranks' values are
    ignored."""
    if not _together():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def destroy_process_group() -> None:
    """Tear down the default process group, if one was initialised (safe to call always)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
