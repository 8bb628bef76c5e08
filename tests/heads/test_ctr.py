"""The CTR head: negatives, hard negatives, the calibrated loss and its metrics."""

import math

import torch

from distrec.config.schema import ModelConfig
from distrec.heads.base import HeldOut
from distrec.heads.ctr import ScoreCalibration, ctr_loss, ctr_metrics, hard_negatives
from distrec.models.io import PairInputs, TrainOutputs


def test_hard_negatives_are_the_top_scoring_allowed_candidates():
    users = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [-1.0, 0.0]])
    out = TrainOutputs(
        users, torch.tensor([0]), cand, torch.arange(1, 5), torch.zeros(4), torch.tensor([1.0]), {}
    )
    forbidden = torch.tensor([[True, False, False, False]])  # the positive itself
    assert hard_negatives(out, forbidden, 2).tolist() == [[1, 2]]
    forbidden = torch.tensor([[True, True, False, False]])  # and a window item
    assert hard_negatives(out, forbidden, 2).tolist() == [[2, 3]]


def test_the_calibration_scales_and_shifts_the_logits_in_the_loss():
    users = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    plain = TrainOutputs(
        users, torch.tensor([0]), cand, torch.arange(1, 3), torch.zeros(2), torch.tensor([1.0]), {}
    )
    calibrated = plain._replace(heads={"ctr": torch.tensor([2.0, -1.0])})
    # logits 1 (label 1) and -1 (label 0) -> 2*1-1 = 1 and 2*(-1)-1 = -3
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-3.0))) / 2
    assert math.isclose(ctr_loss(calibrated, torch.tensor([[1]])).item(), expected, rel_tol=1e-6)
    assert not math.isclose(ctr_loss(plain, torch.tensor([[1]])).item(), expected, rel_tol=1e-3)


def test_the_calibration_module_returns_its_parameters_or_calibrated_scores():
    module = ScoreCalibration(ModelConfig())
    with torch.no_grad():
        module.scale.fill_(2.0)
        module.shift.fill_(0.5)
    empty = PairInputs(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), torch.zeros(1))
    assert module(empty).tolist() == [2.0, 0.5]
    scored = PairInputs(
        empty.users,
        empty.items,
        empty.history_mean,
        empty.history_count,
        scores=torch.tensor([[1.0, -1.0]]),
    )
    assert module(scored).tolist() == [[2.5, -1.5]]


def test_ctr_metrics_read_the_calibrated_logits():
    logits = torch.tensor([[2.0, 1.0, 3.0], [1.0, 0.0, -1.0]])
    held = HeldOut(-logits, {"ctr": logits}, None, torch.zeros(2, 3))
    found = ctr_metrics(held, ModelConfig())
    # pooled: positives 2, 1 vs negatives 1, 3, 0, -1: 2 beats 3 of 4; 1 beats 2 and ties 1
    assert math.isclose(found["auc"], (3 + 2.5) / 8)
    assert math.isclose(found["gauc"], (0.5 + 1.0) / 2)
    assert found["logloss"] > 0


def test_negatives_avoid_the_users_whole_history_not_only_the_window(monkeypatch):
    import distrec.heads.ctr as ctr_module
    from distrec.heads import LossContext, NegativeSampling
    from distrec.models.io import ItemBatch, TrainBatch

    inputs, targets = torch.tensor([[1, 2, 0]]), torch.tensor([[2, 3, 0]])
    batch = TrainBatch(inputs, targets, torch.tensor([True]), ItemBatch("d", torch.arange(1, 9)))
    history = torch.zeros(1, 8, dtype=torch.bool)
    history[0, [5, 6]] = True  # items 6 and 7: earlier in the user's history, not in the window
    seen = {}

    def spy(forbidden, k, weights, generator):
        seen["forbidden"] = forbidden
        return torch.multinomial((~forbidden).double(), k, replacement=True, generator=generator)

    monkeypatch.setattr(ctr_module, "sample_negatives", spy)
    users = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    out = TrainOutputs(
        users,
        torch.tensor([1, 2]),
        torch.randn(8, 4),
        torch.arange(1, 9),
        torch.zeros(8),
        torch.tensor([1.0]),
        {},
    )
    ctx = LossContext(
        batch=batch,
        share=torch.full((9,), 0.1),
        sampled=False,
        cross_rank=False,
        logq=False,
        world=1,
        generator=torch.Generator().manual_seed(0),
        negatives=NegativeSampling(50),
        seen=lambda: history,
    )
    ctr_module.ctr(out, ctx)
    forbidden = seen["forbidden"]
    assert forbidden.shape == (2, 8)  # one row per real position
    # window items 1, 2, 3 (columns 0-2) and history items 6, 7 (columns 5, 6)
    assert forbidden[0].nonzero().flatten().tolist() == [0, 1, 2, 5, 6]


def test_seen_columns_map_a_users_history_onto_the_candidates(tmp_path):
    from distrec.train.domains import DomainData

    d = DomainData.__new__(DomainData)
    d.__dict__["train_histories"] = {7: torch.tensor([3, 9, 4])}
    d.__dict__["catalog"] = list(range(10))  # num_items = 10
    seen = d.seen_columns(torch.tensor([7, 8]), torch.tensor([4, 5, 9]))
    # candidates 4, 5, 9: user 7 saw 4 and 9 (3 is not a candidate); user 8 has no history
    assert seen.tolist() == [[True, False, True], [False, False, False]]
