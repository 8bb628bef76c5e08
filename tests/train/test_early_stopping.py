"""Early stopping on eval.metric with min_delta, counted in evaluations; a step budget."""

import torch

from distrec.train.state import EarlyStopping, TrainState


def state() -> TrainState:
    return TrainState(gen=torch.Generator())


def feed(rule: EarlyStopping, scores: list[float], total_steps: int = 10_000) -> tuple[int, int]:
    """(epochs run before stopping, best epoch) for a sequence of validation scores."""
    s = state()
    for score in scores:
        s.result.steps += 10
        valid = {"ndcg@10": 0.0, "mrr@10": score}
        if s.end_epoch(valid, rule, total_steps):
            break
    return s.epoch, s.result.best_epoch


def test_the_configured_metric_decides_not_ndcg():
    epochs, best = feed(EarlyStopping("mrr@10", 2, 0.0), [0.1, 0.3, 0.2, 0.25, 0.4])
    assert (epochs, best) == (4, 2)  # ndcg@10 is 0 throughout: it would have stopped at 3


def test_gains_below_min_delta_do_not_reset_patience():
    scores = [0.100, 0.102, 0.103, 0.104, 0.200]
    assert feed(EarlyStopping("mrr@10", 3, 0.005), scores) == (4, 1)
    assert feed(EarlyStopping("mrr@10", 3, 0.0), scores) == (5, 5)


def test_the_step_budget_ends_training():
    epochs, _ = feed(EarlyStopping("mrr@10", 100, 0.0), [0.1 * i for i in range(1, 20)], 30)
    assert epochs == 3
