"""The gradient-reversal layer and the domain critic: the critic learns to separate the
domains while the reversed gradient makes the encoder unlearn what separates them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distrec.models.alignment import DomainCritic, reversal_strength, reverse_gradient
from distrec.train.alignment import balanced_accuracy, probe_accuracy


def critic_loss(encoder, critic, x, y, reversal):
    return F.binary_cross_entropy_with_logits(critic(encoder(x), reversal), y)


@pytest.mark.parametrize("reversal", [1.0, 0.3])
def test_reversal_flips_the_critics_gradient_into_the_encoder(reversal):
    torch.manual_seed(0)
    encoder, critic = torch.nn.Linear(4, 8).double(), DomainCritic(8).double()
    x, y = torch.randn(32, 4, dtype=torch.double), (torch.rand(32) > 0.5).double()
    critic_loss(encoder, critic, x, y, reversal).backward()
    got = encoder.weight.grad[0, 0].item()
    critic_grad = critic.net[0].weight.grad.clone()
    # The loss's true derivative by the encoder weight, by central differences.
    eps, w = 1e-6, encoder.weight
    with torch.no_grad():
        w[0, 0] += eps
        up = critic_loss(encoder, critic, x, y, reversal).item()
        w[0, 0] -= 2 * eps
        down = critic_loss(encoder, critic, x, y, reversal).item()
        w[0, 0] += eps
    numeric = (up - down) / (2 * eps)
    assert abs(numeric) > 1e-6
    assert got == pytest.approx(-reversal * numeric, rel=1e-5)
    # The critic itself still descends its loss: its gradient is not reversed.
    critic.zero_grad()
    F.binary_cross_entropy_with_logits(critic(encoder(x).detach(), 0.0), y).backward()
    assert torch.allclose(critic.net[0].weight.grad, critic_grad)


def test_reverse_gradient_is_the_identity_forward():
    x = torch.randn(3, requires_grad=True)
    assert torch.equal(reverse_gradient(x, 2.0), x)


def test_schedules():
    assert reversal_strength("constant", 0.0) == 1.0
    assert reversal_strength("linear", 0.25) == 0.25
    assert reversal_strength("dann", 0.0) == 0.0
    assert 0.76 < reversal_strength("dann", 0.2) < 0.77
    assert reversal_strength("dann", 2.0) == reversal_strength("dann", 1.0)


def test_adversarial_training_makes_shifted_domains_inseparable():
    """Two domains whose features differ by a shift the task does not need: an encoder
    trained through the reversal layer removes it, so a fresh probe falls toward chance;
    without reversal (the plain encoder) the probe separates them."""
    gen = torch.Generator().manual_seed(0)
    shift = torch.zeros(6)
    shift[0] = 3.0

    def domain(n, shifted):
        return torch.randn(n, 6, generator=gen) + (shift if shifted else 0.0)

    train = {"s": domain(400, False), "t": domain(400, True)}
    held = {"s": domain(200, False), "t": domain(200, True)}
    torch.manual_seed(0)
    encoder, critic, head = torch.nn.Linear(6, 6), DomainCritic(6), torch.nn.Linear(6, 1)
    before = probe(encoder, train, held)
    params = [*encoder.parameters(), *critic.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.cat([train["s"], train["t"]])
    y = torch.cat([torch.zeros(400), torch.ones(400)])
    wanted = x[:, 1:].sum(1, keepdim=True)  # the task reads every feature but the shifted one
    for _ in range(1000):
        opt.zero_grad()
        task = (head(encoder(x)) - wanted).pow(2).mean()
        (task + critic_loss(encoder, critic, x, y, 3.0)).backward()
        opt.step()
    after = probe(encoder, train, held)
    assert before > 0.9, before
    assert after < 0.6, after
    assert task.item() < 0.05  # and the task is still solved


def probe(encoder, train, held):
    with torch.no_grad():
        reps = [{k: encoder(v) for k, v in part.items()} for part in (train, held)]
    return probe_accuracy(*reps, target="t", seed=0)


def test_balanced_accuracy_is_chance_for_a_constant_guess():
    labels = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert balanced_accuracy(torch.full((4,), -1.0), labels) == 0.5
    assert balanced_accuracy(torch.tensor([-1.0, -1.0, -1.0, 1.0]), labels) == 1.0
