"""The retrieval loss: duplicate positives across ranks, logQ, scale; fp32 ranking scores."""

import math

import torch

from distrec.heads.retrieval import (
    duplicate_positives,
    inclusion_log_prob,
    item_slots,
    retrieval_loss,
)
from distrec.models.io import TrainOutputs


def outputs(users, cand, ids, targets, scale=20.0):
    return TrainOutputs(
        users=users,
        targets=targets,
        candidates=cand,
        candidate_items=ids,
        bias=torch.zeros(cand.shape[0]),
        scale=torch.tensor([scale]),
    )


def test_a_positive_gathered_twice_is_masked_as_a_negative():
    ids = torch.tensor([4, 9, 4, 7])  # item 4 came from this rank (col 0) and another (col 2)
    positives = torch.tensor([0, 3])
    mask = duplicate_positives(ids, positives)
    assert mask.tolist() == [[False, False, True, False], [False, False, False, False]]


def test_masking_the_copy_restores_the_positive_logit_share(monkeypatch):
    """With the copy of the positive as a negative, the positive gets at most half the
    softmax mass however good the model; masked, its share is what it would be alone."""
    import distrec.heads.retrieval as losses

    torch.manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1)
    cand = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    cand[0] = users[0]  # the positive, perfectly scored
    local = outputs(users, cand, torch.tensor([5, 6, 7]), torch.tensor([0]))
    # Another rank's batch also holds item 5 (the positive) with the same vector.
    other_rows = torch.cat([cand[:1], torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)])
    other_ids = torch.tensor([5, 8, 9])

    def fake_gather(t):
        """What gather_with_grad returns on rank 0 of 2: ours, then the other rank's."""
        if t.dtype == torch.long:
            other = other_ids
        elif t.dim() == 2:
            other = other_rows
        else:  # the popularity bias
            other = torch.zeros(3, dtype=t.dtype)
        return torch.cat([t, other]), 0

    monkeypatch.setattr(losses, "gather_with_grad", fake_gather)
    masked = retrieval_loss(local, cross_rank=True)
    alone = retrieval_loss(
        outputs(users, torch.cat([cand, other_rows[1:]]), None, torch.tensor([0]))
    )
    assert math.isclose(masked.item(), alone.item(), rel_tol=1e-6)
    unmasked = local._replace(candidate_items=None)
    assert retrieval_loss(unmasked, cross_rank=True).item() > math.log(2) - 1e-4


def test_logq_is_the_probability_of_being_among_the_batch_candidates():
    gen = torch.Generator().manual_seed(0)
    share = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws, trials = 6, 20000
    samples = torch.multinomial(share.expand(trials, -1), draws, replacement=True, generator=gen)
    seen = torch.zeros(trials, 4).scatter_(1, samples, 1.0).mean(0)
    predicted = inclusion_log_prob(share, draws).exp()
    assert torch.allclose(predicted, seen, atol=0.01), (predicted, seen)
    assert predicted[0] > 0.98 and predicted[3] < 0.3  # popular ~always in, rare seldom


def test_item_slots_count_real_items_of_the_windows():
    inputs = torch.tensor([[3, 4, 5], [7, 0, 0], [0, 0, 0]])
    targets = torch.tensor([[4, 5, 6], [8, 0, 0], [0, 0, 0]])
    assert item_slots(inputs, targets) == 4 + 2


def test_the_scale_multiplies_the_logits():
    users = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sharp = retrieval_loss(outputs(users, cand, None, torch.tensor([0]), scale=20.0))
    soft = retrieval_loss(outputs(users, cand, None, torch.tensor([0]), scale=1.0))
    assert math.isclose(soft.item(), math.log(1 + math.exp(-1.0)), rel_tol=1e-6)
    assert sharp < soft


def test_ranking_scores_stay_fp32_inside_autocast():
    from distrec.models.io import ItemVectors
    from distrec.models.recommender import Recommender

    torch.manual_seed(0)
    vectors = torch.randn(500, 64)
    users = torch.randn(4, 64)
    catalog = ItemVectors(vectors, torch.zeros(500), torch.tensor([20.0]))
    exact = users @ vectors.T * 20.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = Recommender.score(users, catalog)
        rounded = users @ vectors.T * 20.0
    assert scores.dtype == torch.float32 and torch.equal(scores, exact)
    assert rounded.dtype == torch.bfloat16  # what ranking used to see: ties and shuffles


def test_ctr_negatives_are_never_the_positive_nor_a_window_item():
    from distrec.heads.ctr import sample_negatives, window_items
    from distrec.models.io import ItemBatch, TrainBatch

    inputs = torch.tensor([[1, 2, 3, 0], [5, 6, 0, 0]])
    targets = torch.tensor([[2, 3, 4, 0], [6, 7, 0, 0]])
    batch = TrainBatch(
        inputs, targets, torch.tensor([True, True]), ItemBatch("d", torch.arange(1, 9))
    )
    seen = window_items(batch)  # [2, 8]: candidates 1..8 as columns 0..7
    assert seen[0].nonzero().flatten().tolist() == [0, 1, 2, 3]  # items 1-4
    forbidden = seen[batch.real_positions().nonzero()[:, 0]]
    gen = torch.Generator().manual_seed(0)
    draws = sample_negatives(forbidden, 50, None, gen)
    assert draws.shape == (5, 50)
    assert not forbidden.gather(1, draws).any()  # never a positive or a window item
    assert set(draws[0].tolist()) == {4, 5, 6, 7}  # uniform over what is allowed
    pop = torch.tensor([1.0, 1, 1, 1, 100, 1, 1, 1], dtype=torch.float64)
    by_pop = sample_negatives(forbidden[:1], 2000, pop, gen)
    assert (by_pop == 4).float().mean() > 0.9  # item 5 carries ~97% of the allowed mass
    everything = torch.ones(1, 8, dtype=torch.bool)  # a window holding the whole catalog
    assert sample_negatives(everything, 3, None, gen).shape == (1, 3)


def test_ctr_loss_uses_k_negatives_per_positive():
    from distrec.heads.ctr import ctr_loss

    users = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    out = outputs(users, cand, None, torch.tensor([0]), scale=1.0)
    loss = ctr_loss(out, torch.tensor([[1, 2]]))
    # logits: positive 1, negatives -1 and 0 -> mean BCE of the three
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-1)) + math.log(2)) / 3
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_ctr_negatives_and_sampling_reach_the_loss(synth_dir, tmp_path):
    from tests.train.test_extending import train

    stages = {"pretrain": {"epochs": 1}, "zero_shot": False, "adapt": {"enabled": False}}
    stages |= {"baselines": []}
    losses, aucs = {}, {}
    for name, model in (
        ("k1", {"heads": {"ctr": 1.0}, "ctr_negatives": 1}),
        ("k8", {"heads": {"ctr": 1.0}, "ctr_negatives": 8}),
        ("k8pop", {"heads": {"ctr": 1.0}, "ctr_negatives": 8, "ctr_sampling": "popularity"}),
        ("k8hard", {"heads": {"ctr": 1.0}, "ctr_negatives": 8, "ctr_hard_negatives": 4}),
    ):
        found = train(tmp_path, synth_dir, name, model=model, stages=stages, train={"max_steps": 4})
        losses[name] = found["pretrain"]["history"][0]["loss"]
        aucs[name] = found["pretrain"]["test"]["auc"]
    # the model's own top-scoring items are harder negatives than uniform draws
    assert losses["k8hard"] > losses["k8"]
    # eval.ctr_negatives changes what the held-out items are judged against, not training
    model = {"heads": {"ctr": 1.0}, "ctr_negatives": 8}
    few = train(
        tmp_path,
        synth_dir,
        "k8eval5",
        model=model,
        stages=stages,
        train={"max_steps": 4},
        eval={"ctr_negatives": 5},
    )
    assert few["pretrain"]["history"][0]["loss"] == losses["k8"]
    assert few["pretrain"]["test"]["auc"] != aucs["k8"]
    # more negatives per positive: the BCE is averaged over more (easy) zeros
    assert losses["k1"] != losses["k8"] != losses["k8pop"]
    # popular negatives are harder to tell from the positive than uniform ones
    assert losses["k8pop"] > losses["k8"]
