"""Read gradients and modify parameters in place between optimizer steps, on any backend.

Some training code works on the model between steps: AdaLoRA's rank budget reads each
LoRA parameter's gradient and masks parameters in place. Under DeepSpeed neither works
as is:

- the engine's step has already zeroed (ZeRO-2) or partitioned (ZeRO-3) `p.grad`, so
  the gradients are captured by tensor hooks during backward (`GradientCapture`),
  summed over micro-batches; each rank sees only its own samples, and the engine
  clipped what it applied, so `global_gradients` averages them over ranks and clips
  them as the engine did;
- ZeRO-3's parameters are empty shards between forwards, and DeepSpeed's optimizer
  keeps an fp32 master copy that would overwrite an in-place change at the next step,
  so `gathered_for_update` gathers them whole and writes the change back to both.

Only sharded backends need this: under DDP or in one process `p.grad` still holds the
averaged, clipped gradient between the step and zero_grad, and parameters are whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from distrec.distributed.accelerator import live_strategy
from distrec.distributed.collectives import world_size
from distrec.distributed.unshard import SHARDING


def updates_need_gathering(accelerator) -> bool:
    """Whether this launch shards parameters or gradients, so code that reads gradients or
    edits parameters between steps must go through this module."""
    return live_strategy(accelerator) in SHARDING


class GradientCapture:
    """Sums each parameter's gradient over backward passes (micro-batches), as float32,
    into `grads[name]` (same shape as the parameter), whatever the backend does to
    `p.grad`. Only parameters that require grad get a hook."""

    def __init__(self, params: Mapping[str, nn.Parameter]) -> None:
        self.grads: dict[str, torch.Tensor] = {}
        self.hooks = [
            p.register_hook(self._hook(name)) for name, p in params.items() if p.requires_grad
        ]

    def _hook(self, name: str):
        def hook(grad: torch.Tensor) -> None:
            g = grad.detach().float()
            self.grads[name] = self.grads[name] + g if name in self.grads else g.clone()

        return hook

    def clear(self) -> None:
        """Forget the captured gradients (after each optimizer step)."""
        self.grads.clear()

    def remove(self) -> None:
        """Detach the hooks from the parameters."""
        for h in self.hooks:
            h.remove()
        self.hooks = []


def global_gradients(
    grads: dict[str, torch.Tensor], engine: nn.Module, max_grad_norm: float | None
) -> dict[str, torch.Tensor]:
    """In place and returned: this rank's summed gradients -> the gradients the engine
    applied (summed over ranks, divided by the world size, scaled by
    min(1, max_grad_norm / (norm + 1e-6)), torch's and DeepSpeed's clipping rule, where
    `engine.get_global_grad_norm()` gives the norm). Collective: every rank calls it with
    the same keys in the same order."""
    world = world_size()
    norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
    scale = 1.0 / world
    if max_grad_norm and norm is not None:
        scale *= min(1.0, max_grad_norm / (float(norm) + 1e-6))
    for g in grads.values():
        if world > 1:
            dist.all_reduce(g)
        g.mul_(scale)
    return grads


@contextmanager
def gathered_for_update(params: list[nn.Parameter]) -> Iterator[None]:
    """Inside: `params` hold their whole values and may be modified in place. On a normal
    exit the values are written to DeepSpeed's fp32 master copies (parameters that require
    grad) and, for ZeRO-3, rank 0's values back to every rank's shards. Collective: every
    rank enters with the same list. Without DeepSpeed it changes nothing."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param

    # modifier_rank=0: on exit rank 0's (identical) values are broadcast and re-partitioned.
    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        yield
        for p in params:
            if p.requires_grad:
                # Else the optimizer's next step restores the value from its fp32 copy.
                safe_set_full_fp32_param(p, p.data)
