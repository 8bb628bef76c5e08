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
