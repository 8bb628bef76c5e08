"""Analytic model FLOPs of a distrec training step (the MFU numerator).

Conventions (stated in every result that uses them):
- A matmul of [m, k] x [k, n] is 2mkn FLOPs; embeddings, norms, activations, softmax,
  dropout and the optimizer are not counted (they are not matmuls; MFU counts useful
  model FLOPs only, so time spent in them lowers MFU).
- LM tokens are the real (unpadded) tokens of the distinct items a step encodes; the
  padded count is reported beside it (padding is work done but not useful).
- Frozen LM weights under LoRA: forward 2N per token and backward 2N per token
  (activation gradients only; no weight gradients): 4N. LoRA adapters and fully
  trained tower weights: 6N (forward 2N + activation grad 2N + weight grad 2N).
- Attention scores (QK^T and AV): 4·s·h per token per layer forward, backward twice that
  (included).
"""

from __future__ import annotations

import torch

FORMULA = (
    "step FLOPs = LM: (4·N_lm_frozen + 6·N_lora)·tokens + 12·L·h·Σ_items s_i²  "
    "[frozen weights: fwd 2N + activation-grad 2N, no weight grads; LoRA: 6N; "
    "attention scores fwd 4·s·h per token per layer, bwd 2x fwd] "
    "+ towers: 6·N_proj·items (4·N for the first layer over cached features: no input grad) + 6·N_user_tower·positions + 12·layers·d·Σ_rows len² "
    "+ logits: 6·d·positions·candidates. "
    "N counts matmul weights only (no embeddings, norms, biases); tokens = real tokens; "
    "the unused BERT pooler (2h² per item) is omitted."
)


def linear_params(module: torch.nn.Module, exclude: tuple[str, ...] = ()) -> int:
    """Matmul weights of every Linear in `module` (bias excluded: it is an add, not a matmul)."""
    total = 0
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear) and not any(e in name for e in exclude):
            total += m.weight.numel()
    return total


def lm_shape(lm: torch.nn.Module) -> dict:
    """Layers, hidden size and matmul weights of an HF encoder or decoder (pooler excluded)."""
    cfg = lm.config
    layers = int(getattr(cfg, "num_hidden_layers", 0) or cfg.n_layer)
    hidden = int(getattr(cfg, "hidden_size", 0) or cfg.d_model)
    weights = linear_params(lm, exclude=("pooler", "lora_"))
    lora = sum(p.numel() for n, p in lm.named_parameters() if "lora_" in n)
    return {"layers": layers, "hidden": hidden, "matmul_weights": weights, "lora_params": lora}


def tower_shape(model: torch.nn.Module, dim: int, user_layers: int) -> dict:
    base = getattr(model, "base_model", model)
    base = getattr(base, "model", base)
    proj = base.item_tower.proj
    user = linear_params(base.user_tower, exclude=("lora_",))
    return {
        "proj_weights": linear_params(proj, exclude=("lora_",)) if proj is not None else 0,
        "proj_first_layer_weights": proj.fc_in.weight.numel() if proj is not None else 0,
        # Cached features are constants: the first projection layer needs no input gradient.
        "proj_input_grad": base.item_tower.lm is not None,
        "user_tower_weights": user,
        "dim": dim,
        "user_layers": user_layers,
    }


def lm_train_flops(lm: dict, tokens: float, sum_sq_len: float) -> float:
    frozen = lm["matmul_weights"]
    return (4 * frozen + 6 * lm["lora_params"]) * tokens + 12 * lm["layers"] * lm[
        "hidden"
    ] * sum_sq_len


def lm_forward_flops(lm: dict, tokens: float, sum_sq_len: float) -> float:
    weights = lm["matmul_weights"] + lm["lora_params"]
    return 2 * weights * tokens + 4 * lm["layers"] * lm["hidden"] * sum_sq_len


def tower_train_flops(
    towers: dict, items: float, positions: float, sum_sq_rows: float, candidates_x_positions: float
) -> float:
    d = towers["dim"]
    no_input_grad = 0 if towers["proj_input_grad"] else towers["proj_first_layer_weights"]
    return (
        (6 * towers["proj_weights"] - 2 * no_input_grad) * items
        + 6 * towers["user_tower_weights"] * positions
        + 12 * towers["user_layers"] * d * sum_sq_rows
        + 6 * d * candidates_x_positions
    )
