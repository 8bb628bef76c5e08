"""The towers declare their LoRA targets and per-domain modules themselves."""

import pytest
from torch import nn

from distrec.config import ConfigError
from distrec.config.schema import ModelConfig
from distrec.models.registry import ModelSpec, build_model


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = type("C", (), {"hidden_size": 8})()
        self.layer = nn.ModuleDict({"query": nn.Linear(8, 8), "value": nn.Linear(8, 8)})
        self.pooler = nn.ModuleDict({"query": nn.Linear(8, 8)})


def two_tower(lm=None):
    cfg = ModelConfig(dim=8, user_tower={"layers": 2, "heads": 2})
    return build_model("two_tower", ModelSpec(cfg, {"a": 5}, 4, feature_dim=8, lm=lm))


def test_lora_targets_are_every_projection_and_user_tower_linear():
    model = two_tower()
    targets = model.lora_targets()
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(targets) == linears  # no LM here: every linear of the towers, nothing else
    assert model.domain_modules("a") == ["item_tower.ids.d_a"]
    ids_only = build_model("id_only", ModelSpec(ModelConfig(dim=8), {"a": 5}, 4))
    assert all(t.startswith("user_tower.") for t in ids_only.lora_targets())


def test_lm_targets_skip_the_pooler_and_unknown_names_are_refused():
    model = two_tower(TinyLM())
    names = model.item_tower.lm_lora_names(["query"])
    assert model.lm_lora_targets(names) == ["item_tower.lm.layer.query"]  # not the pooler's
    with pytest.raises(ConfigError, match=r"peft.lm_target_modules: \['qkv'\] name no module"):
        model.item_tower.lm_lora_names(["qkv", "query"])


def test_a_block_declares_exactly_its_linears():
    """Rename a linear of the block without updating LINEARS and this fails, instead of
    LoRA silently moving (what the old name patterns did)."""
    from distrec.models.towers import CausalBlock

    block = CausalBlock(8, 2, 0.0)
    linears = {n for n, m in block.named_children() if isinstance(m, nn.Linear)}
    assert set(CausalBlock.LINEARS) == linears
