"""The heads' registry, the joint loss and metric directions."""

import math

import pytest
import torch

from distrec.config import ConfigError, RunConfig
from distrec.heads import HEADS
from distrec.heads.base import better, head_modules, lower_is_better, reporting_head, run_heads
from distrec.models.io import ItemBatch, TrainBatch, TrainOutputs
from distrec.train.losses import JointLoss


def batch_and_outputs():
    inputs = torch.tensor([[1, 2, 3]])
    targets = torch.tensor([[2, 3, 4]])
    ratings = torch.tensor([[4.0, 2.0, 5.0]])
    batch = TrainBatch(
        inputs, targets, torch.tensor([True]), ItemBatch("d", torch.arange(1, 6)), ratings, ratings
    )
    gen = torch.Generator().manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=-1)
    cand = torch.nn.functional.normalize(torch.randn(5, 4, generator=gen), dim=-1)
    heads = {"rating": torch.tensor([3.0, 3.0, 3.0]), "ctr": torch.tensor([1.0, 0.0])}
    out = TrainOutputs(
        users, targets[0] - 1, cand, torch.arange(1, 6), torch.zeros(5), torch.tensor([10.0]), heads
    )
    return batch, out


def context(batch):
    from distrec.heads import LossContext, NegativeSampling

    return LossContext(
        batch=batch,
        share=torch.full((6,), 0.2),
        sampled=False,
        cross_rank=False,
        logq=False,
        world=1,
        generator=torch.Generator().manual_seed(1),
        negatives=NegativeSampling(2),
    )


def test_the_joint_loss_is_the_weighted_sum_of_the_heads_losses():
    batch, out = batch_and_outputs()
    joint = JointLoss({"retrieval": 1.0, "rating": 0.5})(out, context(batch))
    retrieval = HEADS.get("retrieval").loss(out, context(batch))
    rating = HEADS.get("rating").loss(out, context(batch))
    # MSE of 3 against the targets' ratings (4, 2, 5): (1 + 1 + 4) / 3 = 2
    assert math.isclose(rating.item(), 2.0, rel_tol=1e-6)
    assert math.isclose(joint.item(), retrieval.item() + 0.5 * 2.0, rel_tol=1e-6)
    alone = JointLoss({"retrieval": 1.0})(out, context(batch))
    assert torch.equal(alone, retrieval)  # one head at weight 1 is its loss, bit for bit


def test_metric_directions_and_owners():
    assert lower_is_better("rmse") and lower_is_better("mae") and lower_is_better("logloss")
    assert not lower_is_better("ndcg@10") and not lower_is_better("auc")
    assert better("rmse", 0.9, 1.0) and not better("rmse", 1.0, 0.9)
    assert better("ndcg@10", 0.2, 0.1) and not better("ndcg@10", 0.2, 0.15, margin=0.1)
    assert (reporting_head("rmse"), reporting_head("auc"), reporting_head("macro_f1")) == (
        "rating",
        "ctr",
        "preference",
    )
    assert reporting_head("ndcg@10") is None


def test_every_head_of_the_run_gets_its_module_and_unknown_heads_are_refused():
    cfg = RunConfig.model_validate(
        {
            "model": {"heads": {"retrieval": 1.0, "ctr": 0.2}},
            "stages": {"adapt": {"heads": {"rating": 1.0}}},
        }
    )
    assert run_heads(cfg) == ["retrieval", "ctr", "rating"]
    assert sorted(head_modules(cfg)) == ["ctr", "rating"]  # retrieval adds no module
    with pytest.raises(ConfigError, match=r"model\.heads='nope': no head of that name"):
        HEADS.get("nope")
