"""Score options of the recommender: cosine vs dot, fixed vs learned temperature."""

import math

import torch

from distrec.config.schema import ModelConfig
from distrec.models.io import ItemBatch, TrainBatch, TrainOutputs
from distrec.models.recommender import MAX_LOGIT_SCALE, Recommender
from distrec.models.registry import ModelSpec, build_model


def model(**cfg) -> Recommender:
    torch.manual_seed(0)
    spec = ModelSpec(
        ModelConfig(dim=16, user_tower={"layers": 1, "heads": 2}, **cfg),
        domain_items={"d": 30},
        max_len=8,
    )
    return build_model("id_only", spec)


def train_out(m: Recommender) -> TrainOutputs:
    inputs = torch.tensor([[1, 2, 3, 4]])
    batch = TrainBatch(
        inputs, inputs + 1, torch.tensor([True]), ItemBatch("d", torch.arange(1, 31))
    )
    return m(batch)


def test_cosine_normalises_and_dot_does_not():
    cos = train_out(model(score="cosine"))
    dot = train_out(model(score="dot"))
    assert torch.allclose(cos.users.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(cos.candidates.norm(dim=-1), torch.ones(30), atol=1e-5)
    assert not torch.allclose(dot.candidates.norm(dim=-1), torch.ones(30), atol=1e-2)


def test_a_learned_temperature_starts_at_the_configured_one_and_gets_gradients():
    m = model(temperature=0.1, learn_temperature=True)
    assert math.isclose(m.scale().item(), 10.0, rel_tol=1e-5)
    out = train_out(m)
    from distrec.heads.retrieval import retrieval_loss

    retrieval_loss(out).backward()
    assert m.log_scale.grad is not None and m.log_scale.grad.abs().item() > 0
    with torch.no_grad():
        m.log_scale.fill_(10.0)
    assert m.scale().item() == MAX_LOGIT_SCALE  # capped


def test_a_fixed_temperature_is_not_a_parameter():
    m = model(temperature=0.05)
    assert m.log_scale is None and math.isclose(m.scale().item(), 20.0, rel_tol=1e-6)
    assert not any("log_scale" in name for name, _ in m.named_parameters())
