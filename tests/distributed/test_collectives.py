"""distrec.distributed.collectives, the cross-rank retrieval loss, unshard and
sharded_update on two real gloo ranks (spawned processes, seconds each)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.distributed.spawning import run_on_ranks

# Starts real processes (two spawned gloo ranks), like the other multi-process tests.
multiprocess = pytest.mark.integration

D = 4  # vector width


def rows(rank: int, n: int) -> torch.Tensor:
    """[n, D] values that name their rank and row."""
    return torch.arange(n * D, dtype=torch.float32).reshape(n, D) + 100.0 * rank


def _gather_with_grad(rank: int, world: int, counts: tuple[int, ...]) -> None:
    from distrec.distributed.collectives import gather_tensors, gather_with_grad

    local = rows(rank, counts[rank]).requires_grad_(True)
    gathered, offset = gather_with_grad(local)
    assert offset == sum(counts[:rank])
    assert torch.equal(gathered.detach(), torch.cat([rows(r, n) for r, n in enumerate(counts)]))
    assert [p.shape[0] for p in gather_tensors(local)] == list(counts)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    # d/d(local) is exactly the local rows' weights: no gradient leaks in from other rows.
    assert torch.equal(local.grad, weights[offset : offset + counts[rank]])


@multiprocess
@pytest.mark.parametrize("counts", [(3, 0), (0, 2), (2, 3)])
def test_gather_with_grad_concatenates_in_rank_order_and_keeps_local_gradients(counts):
    run_on_ranks(_gather_with_grad, counts)


def batch_outputs(rank: int, users: int, cands: int) -> tuple[dict, torch.Tensor]:
    """TrainOutputs' fields (a dict) and log_q of one rank; candidate ids differ per rank, so no
    gathered candidate copies a positive (the duplicate mask is all False)."""
    gen = torch.Generator().manual_seed(10 + rank)
    out = {
        "users": torch.randn(users, D, generator=gen).requires_grad_(True),
        "targets": torch.randint(0, cands, (users,), generator=gen),
        "candidates": torch.randn(cands, D, generator=gen).requires_grad_(True),
        "candidate_items": torch.arange(cands) + 100 * rank,
        "bias": torch.randn(cands, generator=gen).requires_grad_(True),
        "scale": torch.tensor([5.0], requires_grad=True),
    }
    return out, -torch.rand(cands, generator=gen)


def _empty_rank_loss(rank: int, world: int, empty: int) -> float:
    from distrec.heads.retrieval import retrieval_loss
    from distrec.models.io import TrainOutputs

    shapes = [(0, 2) if r == empty else (3, 5) for r in range(world)]
    out, log_q = batch_outputs(rank, *shapes[rank])
    loss = retrieval_loss(TrainOutputs(**out), log_q, cross_rank=True)
    loss.backward()
    grads = [out[k].grad for k in ("users", "candidates", "bias", "scale")]
    if rank == empty:
        assert loss.item() == 0.0
        assert all(g is not None and not g.any() for g in grads)
        return loss.item()
    # The reference: one process that holds every rank's candidates, ours first at offset.
    parts = [batch_outputs(r, *shapes[r]) for r in range(world)]
    ref_cands = [
        p[0]["candidates"].detach().clone().requires_grad_(r == rank) for r, p in enumerate(parts)
    ]
    offset = sum(shapes[r][1] for r in range(rank))
    ref = {
        "users": out["users"].detach().clone().requires_grad_(True),
        # Cross-rank, retrieval_loss shifts the targets by this rank's offset itself.
        "targets": out["targets"] + offset,
        "candidates": torch.cat(ref_cands),
        "candidate_items": torch.cat([p[0]["candidate_items"] for p in parts]),
        "bias": torch.cat([p[0]["bias"].detach() for p in parts]),
        "scale": out["scale"].detach(),
    }
    ref_loss = retrieval_loss(TrainOutputs(**ref), torch.cat([p[1] for p in parts]))
    ref_loss.backward()
    assert loss.item() > 0.0
    assert torch.equal(loss.detach(), ref_loss.detach()), (loss.item(), ref_loss.item())
    assert torch.allclose(out["candidates"].grad, ref_cands[rank].grad, rtol=0, atol=1e-7)
    assert torch.allclose(out["users"].grad, ref["users"].grad, rtol=0, atol=1e-7)
    return loss.item()


@multiprocess
@pytest.mark.parametrize("empty", [0, 1])
def test_a_rank_with_an_empty_batch_neither_hangs_nor_moves_weights(empty):
    losses = run_on_ranks(_empty_rank_loss, empty)
    assert losses[empty] == 0.0 and losses[1 - empty] > 0.0


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(D, 6)
        self.b = nn.Linear(6, 2)
        self.b.bias.requires_grad_(False)
        self.register_buffer("position_ids", torch.arange(5), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _plain_copy(rank: int, world: int) -> dict:
    from torch.distributed.fsdp import FSDPModule, fully_shard
    from torch.distributed.tensor import DTensor

    from distrec.distributed.unshard import PlainCopy, full_state_dict, meta_shell

    torch.manual_seed(0)
    model = Small()
    pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}

    shell = meta_shell(model)
    assert all(p.is_meta for p in shell.parameters())
    assert {n: p.requires_grad for n, p in shell.named_parameters()} == flags
    assert torch.equal(shell.position_ids, model.position_ids)  # non-persistent: copied

    copy = PlainCopy("fsdp", model)
    fully_shard(model)  # FSDP2: every parameter becomes a DTensor holding a shard
    assert all(isinstance(p, DTensor) for p in model.parameters())
    model(torch.randn(3, D)).sum().backward()  # hooks ran: still sharded afterwards

    state = full_state_dict(model)
    assert state.keys() == pristine.keys()
    assert all(torch.equal(state[k], pristine[k]) for k in pristine)
    state["a.weight"].add_(1.0)  # a private copy
    assert torch.equal(full_state_dict(model)["a.weight"], pristine["a.weight"])

    accelerator = SimpleNamespace(unwrap_model=lambda m: m, device=torch.device("cpu"))
    plain = copy.trained(accelerator, model)
    assert type(plain) is Small and not isinstance(plain, FSDPModule)
    assert not any(isinstance(p, DTensor) or p.is_meta for p in plain.parameters())
    assert {n: p.requires_grad for n, p in plain.named_parameters()} == flags
    got = plain.state_dict()
    assert got.keys() == pristine.keys()
    assert all(torch.equal(got[k], pristine[k]) for k in pristine)
    assert torch.equal(plain.position_ids, torch.arange(5))
    return {k: v.tolist() for k, v in got.items()}


@multiprocess
def test_plain_copy_gathers_fsdp_shards_into_an_ordinary_module():
    states = run_on_ranks(_plain_copy)
    assert states[0] == states[1]


def _any_rank_and_broadcast(rank: int, world: int) -> tuple:
    from distrec.distributed.collectives import (
        any_rank,
        broadcast_object,
        sum_over_ranks,
        world_size,
    )

    assert world_size() == world
    decisions = (any_rank(False), any_rank(rank == 1), any_rank(rank == 0), any_rank(True))
    assert decisions == (False, True, True, True)
    sent = ("auto", 3) if rank == 0 else None
    assert broadcast_object(sent) == ("auto", 3)
    assert broadcast_object({"from": rank}, src=1) == {"from": 1}
    total = sum_over_ranks(torch.tensor(float(rank + 1)))
    assert total.dtype == torch.float64 and total.item() == 3.0
    return decisions


@multiprocess
def test_any_rank_and_broadcast_object_agree_on_every_rank():
    assert run_on_ranks(_any_rank_and_broadcast) == [(False, True, True, True)] * 2


def test_collectives_alone_are_the_local_answer():
    from distrec.distributed.collectives import (
        any_rank,
        barrier,
        broadcast_object,
        destroy_process_group,
        gather_with_grad,
        world_size,
    )

    t = torch.ones(2, D)
    assert world_size() == 1
    assert any_rank(True) and not any_rank(False)
    assert broadcast_object([1]) == [1]
    assert gather_with_grad(t) == (t, 0)
    barrier()
    destroy_process_group()  # nothing to destroy: no error


def _global_gradients(rank: int, world: int, max_norm: float | None, norm: float | None) -> None:
    from distrec.distributed.sharded_update import GradientCapture, global_gradients

    weight = nn.Parameter(torch.zeros(2, D))
    frozen = nn.Parameter(torch.zeros(D), requires_grad=False)
    capture = GradientCapture({"weight": weight, "frozen": frozen})
    assert len(capture.hooks) == 1  # only what requires grad
    inputs = [rows(rank, 2) + 1.0, rows(rank, 2) * 0.5]
    for x in inputs:  # two micro-batches; the backend may zero p.grad in between
        (weight * x).sum().backward()
        weight.grad = None
    engine = nn.Module() if norm is None else SimpleNamespace(get_global_grad_norm=lambda: norm)
    grads = global_gradients(capture.grads, engine, max_norm)
    assert grads is capture.grads and list(grads) == ["weight"]
    # The rule spelled out, in the same operation order (so equal to the last bit).
    summed = [(rows(r, 2) + 1.0) + rows(r, 2) * 0.5 for r in range(world)]
    expected = summed[0] + summed[1]
    scale = 1.0 / world
    if max_norm and norm is not None:
        scale *= min(1.0, max_norm / (norm + 1e-6))
    assert torch.equal(grads["weight"], expected.mul_(scale))
    capture.clear()
    capture.remove()
    (weight * inputs[0]).sum().backward()
    assert capture.grads == {}


@pytest.mark.parametrize(
    ("max_norm", "norm"), [(1.0, 37.5), (1.0, 0.25), (None, 37.5), (1.0, None)]
)
def test_global_gradients_average_over_ranks_and_clip_as_the_engine_did(max_norm, norm):
    run_on_ranks(_global_gradients, max_norm, norm)


def test_gathered_for_update_keeps_in_place_changes_and_sets_the_fp32_copies(monkeypatch):
    import deepspeed.utils

    from distrec.distributed.sharded_update import gathered_for_update

    calls = []
    monkeypatch.setattr(
        deepspeed.utils, "safe_set_full_fp32_param", lambda p, v: calls.append((p, v.clone()))
    )
    trained, frozen = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2), False)
    with gathered_for_update([trained, frozen]):
        trained.data.mul_(0.0).add_(2.0)
        frozen.data.add_(1.0)
    assert torch.equal(trained.data, torch.full((3,), 2.0))
    assert [p is trained for p, _ in calls] == [True]  # a frozen one has no fp32 copy
    assert torch.equal(calls[0][1], torch.full((3,), 2.0))
    with pytest.raises(RuntimeError), gathered_for_update([trained]):
        raise RuntimeError("PEFT failed")
    assert len(calls) == 1  # nothing half-done is written back
