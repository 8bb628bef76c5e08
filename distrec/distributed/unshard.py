"""Give back an ordinary module after a sharded backend trained it.

DeepSpeed rewrites the module it prepares: ZeRO-2 turns parameters into views
of one flat buffer (safetensors refuses to save them), ZeRO-3 empties them and
installs hooks that gather them collectively on every forward. Anything after
training (evaluation on one rank's shard of users, saving on rank 0, PEFT's
merge, inserting the next stage's adapter) needs the whole weights in a plain
module. So before `prepare` we keep a weightless (meta-device) copy of the
module, and after training fill it with the gathered weights on every rank.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

SHARDING = {"zero2", "zero3", "zero3_offload", "fsdp"}


def meta_shell(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters live on the meta device (no memory): the memo
    hands deepcopy an empty stand-in for every parameter."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        # A checkpoint loaded under ZeRO-3 (transformers' zero.Init) is already partitioned:
        # its parameters are empty and `ds_shape` holds the real shape.
        shape = getattr(p, "ds_shape", p.shape)
        memo.setdefault(
            id(p),
            nn.Parameter(
                torch.empty(shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad
            ),
        )
    for b in model.buffers():
        # Buffers are small and never partitioned; copied for real because non-persistent
        # ones (BERT's position_ids) are not in the state dict that fills the shell.
        memo.setdefault(id(b), b.detach().clone())
    return copy.deepcopy(model, memo)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every key of `model.state_dict()` as a whole, private CPU tensor, on every rank.

    Collective under ZeRO-3 and FSDP2 (every rank must call it): each partitioned parameter is
    gathered in turn, so peak extra memory is one parameter, not the model."""
    from torch.distributed.tensor import DTensor

    state = model.state_dict(keep_vars=True)
    out = {}
    for key, tensor in state.items():
        if isinstance(tensor, DTensor):  # FSDP2's sharded parameters
            out[key] = tensor.detach().full_tensor().cpu().clone()
        elif hasattr(tensor, "ds_id"):  # a ZeRO-3 partitioned parameter
            import deepspeed

            with deepspeed.zero.GatheredParameters([tensor], modifier_rank=None):
                out[key] = tensor.detach().cpu().clone()
        else:
            out[key] = tensor.detach().cpu().clone()
    return out


def with_whole_weights(model: nn.Module, path: str) -> nn.Module:
    """`model` holding the whole weights saved at `path` (safetensors). A model whose LM
    was partitioned at load (ZeRO-3's zero.Init) cannot take them in place: it comes back
    as a plain copy, as `PlainCopy.trained` gives after training."""
    from safetensors.torch import load_file, load_model

    if not any(hasattr(p, "ds_id") for p in model.parameters()):
        load_model(model, path)  # fills tied parameters saved once
        return model
    shell = meta_shell(model)
    wanted = {name: p.requires_grad for name, p in shell.named_parameters()}
    _, unexpected = shell.load_state_dict(load_file(path), strict=False, assign=True)
    still_meta = [n for n, p in shell.named_parameters() if p.is_meta]
    if unexpected or still_meta:
        raise RuntimeError(
            f"{path} does not fit the model: unexpected {unexpected[:5]}, missing "
            f"{still_meta[:5]}; was it saved by another model config?"
        )
    for name, p in shell.named_parameters():
        p.requires_grad_(wanted[name])
    return shell


class PlainCopy:
    """Taken before `accelerator.prepare`; `trained()` returns the trained weights in a
    plain module (the unwrapped one itself when nothing sharded it)."""

    def __init__(self, strategy: str, model: nn.Module) -> None:
        self.shell = meta_shell(model) if strategy in SHARDING else None

    def trained(self, accelerator, prepared: nn.Module) -> nn.Module:
        """The trained weights of `prepared` in a plain module on the accelerator's device,
        with the original requires_grad flags (and PEFT config). Collective when sharded;
        call it once: the copy hands over its shell."""
        unwrapped = accelerator.unwrap_model(prepared)
        if self.shell is None:
            return unwrapped
        state = full_state_dict(unwrapped)
        device = accelerator.device
        wanted = {name: p.requires_grad for name, p in self.shell.named_parameters()}
        self.shell.load_state_dict({k: v.to(device) for k, v in state.items()}, assign=True)
        for name, p in self.shell.named_parameters():
            p.requires_grad_(wanted[name])
        if hasattr(unwrapped, "peft_config"):
            # Training also changes PEFT's config: AdaLoRA records its final rank pattern
            # there, and saving trims the adapter by it.
            self.shell.peft_config = copy.deepcopy(unwrapped.peft_config)
        shell, self.shell = self.shell, None
        return shell
