"""The distillation loss: zero when the student matches the teacher, over the teacher's
top-k when asked; the teacher scores the very positions and candidates the student trains
on; its encoded catalog is cached for the same weights only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distrec.models.io import ItemBatch, TrainBatch
from distrec.train.distill import catalog_inputs, kd_loss


def test_kd_loss_is_zero_for_the_teachers_own_logits_and_grows_with_the_gap():
    teacher = torch.randn(5, 30)
    assert kd_loss(teacher.clone(), teacher, 2.0, None).item() == pytest.approx(0.0, abs=1e-6)
    near = kd_loss(teacher + 0.1 * torch.randn(5, 30), teacher, 2.0, None)
    far = kd_loss(torch.randn(5, 30), teacher, 2.0, None)
    assert 0 < near < far


def test_kd_loss_scales_by_t_squared_and_top_k_ignores_the_rest():
    teacher, student = torch.randn(4, 20), torch.randn(4, 20)
    kl = kd_loss(student, teacher, 1.0, None)
    # T^2 keeps the gradient scale comparable across temperatures; at T=1 it is the plain KL.
    plain = torch.nn.functional.kl_div(
        student.log_softmax(1), teacher.log_softmax(1), log_target=True, reduction="batchmean"
    )
    assert kl.item() == pytest.approx(plain.item(), rel=1e-6)
    top = teacher.topk(3, dim=1).indices
    changed = student.clone()
    mask = torch.ones_like(student, dtype=torch.bool).scatter_(1, top, False)
    changed[mask] += 5.0  # only candidates outside the teacher's top-3 move
    assert kd_loss(changed, teacher, 2.0, 3) == pytest.approx(kd_loss(student, teacher, 2.0, 3))
    assert kd_loss(changed, teacher, 2.0, None) != pytest.approx(
        kd_loss(student, teacher, 2.0, None)
    )


def test_catalog_inputs_map_a_sampled_batch_back_to_catalog_items():
    candidates = ItemBatch("d", torch.tensor([7, 3, 9]))
    inputs = torch.tensor([[1, 3, 0], [2, 0, 0]])  # indices into [pad] + candidates
    batch = TrainBatch(inputs, inputs, torch.ones(2, dtype=torch.bool), candidates)
    assert catalog_inputs(batch).tolist() == [[7, 9, 0], [3, 0, 0]]


def tiny_teacher_workspace(tmp_path):
    import contextlib
    from types import SimpleNamespace

    from distrec.config.schema import ModelConfig
    from distrec.models.recommender import Recommender
    from distrec.models.towers import ItemTower

    cfg = ModelConfig(dim=8, user_tower={"layers": 1, "heads": 2})
    torch.manual_seed(0)
    model = Recommender(cfg, ItemTower(cfg, 6, {"d": 5}), ["d"], max_len=4).eval()
    d = SimpleNamespace(
        name="d",
        num_items=5,
        tokens=None,
        popularity=torch.zeros(6),
        features=torch.randn(6, 6),
        manifest=SimpleNamespace(data={"catalog": {"sha256": "c0ffee"}}),
    )
    ws = SimpleNamespace(
        out=tmp_path,
        device=torch.device("cpu"),
        is_main=True,
        precision="fp32",
        domains={"d": d},
        cfg=SimpleNamespace(eval=SimpleNamespace(batch_size=4), data=SimpleNamespace(target="d")),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m, autocast=contextlib.nullcontext),
        shard=lambda: None,
    )
    return ws, model


def test_a_cached_teacher_catalog_is_read_back_for_the_same_weights_only(tmp_path):
    from distrec.train.distill import teacher_catalog

    ws, model = tiny_teacher_workspace(tmp_path)
    weights = tmp_path / "teacher.safetensors"
    weights.write_bytes(b"weights v1")
    first = teacher_catalog(ws, model, "d", weights)
    assert len(list((tmp_path / "distill").glob("teacher-d-*.safetensors"))) == 1
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the model changed, the weights file did not: the cache answers
    again = teacher_catalog(ws, model, "d", weights)
    assert torch.equal(again.vectors, first.vectors)
    weights.write_bytes(b"weights v2")  # other weights: encoded anew, cached beside
    fresh = teacher_catalog(ws, model, "d", weights)
    assert not torch.equal(fresh.vectors, first.vectors)
    assert len(list((tmp_path / "distill").glob("teacher-d-*.safetensors"))) == 2
    uncached = teacher_catalog(ws, model, "d", None)
    assert torch.equal(uncached.vectors, fresh.vectors)


def test_the_teacher_scores_the_students_positions_and_candidates():
    """A teacher identical to the student gives the student's own logits, row for row, so
    the distillation term is zero: positions and candidates line up."""
    from distrec.config.schema import DistillConfig
    from distrec.train.distill import Distillation, student_logits

    ws, model = tiny_teacher_workspace(None)
    d = ws.domains["d"]
    term = Distillation(ws, model, DistillConfig(), None)
    inputs = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [2, 0, 0, 0]])
    targets = torch.tensor([[2, 3, 4, 0], [5, 1, 0, 0], [0, 0, 0, 0]])
    candidates = ItemBatch(
        "d", torch.arange(1, 6), popularity=d.popularity[1:], features=d.features[1:]
    )
    request = TrainBatch(inputs, targets, torch.tensor([True, True, False]), candidates)
    with torch.no_grad():
        out = model(request)
        assert torch.allclose(term.teacher_logits(request), student_logits(out), atol=1e-5)
        assert term.loss(None, out, SimpleNamespace(batch=request)).abs() < 1e-6
