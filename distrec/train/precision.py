"""The frozen LM stored in bf16 while a bf16 stage trains.

Under bf16 autocast a frozen fp32 weight is re-cast to bf16 on every call: autocast caches
casts of leaves that require grad only, so for LoRA's frozen base every linear, every step,
copies its weight (12% of the end-to-end step on CPU, perf/results/cpu). Storing the frozen
LM in bf16 removes those copies and halves its memory; LoRA weights, the towers and the
optimizer state stay fp32. The matmuls see the same bf16 weights either way.

PEFT's LoRA layers also cast their input to the adapter weights' dtype (bf16 activations
up to fp32, then autocast casts them back down for the matmul): with a bf16 LM under
autocast that round trip is pure cost, so it is switched off on the LM's LoRA layers (PEFT's
own switch, `cast_input_dtype_enabled`, which `peft.helpers.disable_input_dtype_casting`
sets) for as long as the LM is stored in bf16. Every forward of a bf16 stage runs under
autocast (training and evaluation alike), which gives the adapter its bf16 matmul.

Sharded backends own their storage: DeepSpeed's bf16 mode already casts the whole module
(keeping fp32 masters), and FSDP flattens a unit's parameters into one buffer of one dtype,
so for them nothing is changed here.

After training the LM goes back to fp32 (the bf16 values, now exact in fp32) before anything
merges LoRA into it: a delta merged into bf16 weights would be rounded away.
"""

from __future__ import annotations

import torch
from torch import nn

OWN_STORAGE = {"zero1", "zero2", "zero3", "zero3_offload", "fsdp"}


class FrozenLmStorage:
    """Which frozen LM parameters were moved to bf16 (`store`), to move back (`restore`)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    @classmethod
    def store(
        cls, model: nn.Module, precision: str, strategy: str, wanted: str = "auto"
    ) -> FrozenLmStorage:
        """Cast the frozen fp32 parameters of `model`'s LM to bf16 when the stage computes in
        bf16 on a backend that leaves storage to us and `wanted` (train.frozen_lm_storage) is
        `auto`; a no-op record otherwise."""
        lm = getattr(model.item_tower, "lm", None)
        if lm is None or wanted != "auto" or precision != "bf16" or strategy in OWN_STORAGE:
            return cls([])
        names = []
        for name, param in lm.named_parameters():
            if not param.requires_grad and param.dtype == torch.float32:
                param.data = param.data.to(torch.bfloat16)
                names.append(name)
        set_input_casting(lm, False)
        return cls(names)

    def restore(self, model: nn.Module) -> None:
        """The stored parameters of `model`'s LM (the trained module, possibly a fresh plain
        copy of it) back in fp32."""
        if not self.names:
            return
        lm = model.item_tower.lm
        params = dict(lm.named_parameters())
        for name in self.names:
            params[name].data = params[name].data.float()
        set_input_casting(lm, True)


def set_input_casting(lm: nn.Module, enabled: bool) -> None:
    """Turn PEFT's cast of each adapter layer's input to its weights' dtype on or off."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in lm.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = enabled
