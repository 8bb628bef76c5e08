"""model.activation_checkpointing: the LM's layers really recompute in the backward, and the
gradients (LoRA on a frozen base included) are the same as without it."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertModel

from distrec.config.schema import ModelConfig
from distrec.models.io import ItemBatch
from distrec.models.towers import ItemTower
from distrec.train.compile import enable_activation_checkpointing


def lora_item_tower() -> torch.nn.Module:
    """A text item tower over a tiny random-init BERT (fp32, dropout 0) with LoRA on the
    LM's query/value, whose B matrices are nonzero so every LoRA weight gets a gradient."""
    torch.manual_seed(0)
    lm = BertModel(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    )
    cfg = ModelConfig(dim=16, item_id_embeddings=False, length_buckets=1)
    tower = ItemTower(cfg, feature_dim=32, domain_items={"a": 10}, lm=lm)
    model = get_peft_model(tower, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    return model


def grads_of(model: torch.nn.Module, seed: int = 1) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of a fixed loss over the trainable parameters, and how many times the
    first layer's attention ran."""
    calls = []
    # A submodule of the layer: HF checkpoints the layer's forward, so its own hooks run once.
    layer = model.base_model.model.lm.encoder.layer[0].attention
    handle = layer.register_forward_hook(lambda *_: calls.append(1))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (6, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[3:, 8:] = 0
    model.train()
    out = model(ItemBatch("a", torch.arange(1, 7), input_ids=ids, attention_mask=mask))
    (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, len(calls)


def test_checkpointing_recomputes_the_lm_and_keeps_every_gradient():
    plain = lora_item_tower()
    checkpointed = copy.deepcopy(plain)
    assert enable_activation_checkpointing(checkpointed) == ["base_model.model.lm"]
    lm = checkpointed.base_model.model.lm
    assert (
        lm.is_activation_checkpointing and not plain.base_model.model.lm.is_activation_checkpointing
    )
    expected, calls_plain = grads_of(plain)
    got, calls_checkpointed = grads_of(checkpointed)
    assert (calls_plain, calls_checkpointed) == (1, 2)  # the backward ran the layer again
    lora = [n for n in got if "lora_" in n]
    assert len(lora) == 2 * 2 * 2  # A and B of query and value in both layers
    assert all(got[n].abs().sum() > 0 for n in lora)  # the frozen base passes gradients on
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_is_off_in_eval():
    model = lora_item_tower()
    enable_activation_checkpointing(model)
    model.eval()
    calls = []
    model.base_model.model.lm.encoder.layer[0].attention.register_forward_hook(
        lambda *_: calls.append(1)
    )
    ids = torch.randint(1, 100, (2, 5))
    with torch.no_grad():
        model(
            ItemBatch("a", torch.arange(1, 3), input_ids=ids, attention_mask=torch.ones_like(ids))
        )
    assert calls == [1]


@pytest.mark.parametrize("mode", ["cached", "end_to_end"])
def test_prepare_execution_checkpoints_end_to_end_only(mode):
    from distrec.config import RunConfig
    from distrec.train.compile import prepare_execution

    cfg = RunConfig.model_validate(
        {"model": {"mode": mode, "activation_checkpointing": True}, "data": {"domains": []}}
    )
    model = lora_item_tower()
    prepare_execution(model, cfg)
    assert model.base_model.model.lm.is_activation_checkpointing == (mode == "end_to_end")
