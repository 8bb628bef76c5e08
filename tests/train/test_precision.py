"""The frozen LM stored in bf16 under bf16 (LoRA in fp32), and the loss read at log points."""

import copy
import dataclasses

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

import distrec.train.state as state_module
from distrec.train.adapters import add_lm_lora
from distrec.train.precision import FrozenLmStorage
from distrec.train.stages.baselines import id_baseline_model
from distrec.train.stages.pipeline import Pipeline, new_model
from distrec.train.trainer import StagePlan, Trainer, TrainHook
from tests.train.test_modes import make_run


def lora_model(ws):
    model = new_model(ws)
    model.item_tower.lm = copy.deepcopy(model.item_tower.lm)  # leave the shared LM alone
    return add_lm_lora(model, ws.cfg, "pretrain")


def lm_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.item_tower.lm.named_parameters()}


def test_frozen_lm_weights_go_to_bf16_and_come_back_as_fp32(synth_dir, tmp_path):
    ws = make_run(synth_dir, tmp_path, "end_to_end")
    model = lora_model(ws)
    before = lm_tensors(model)
    storage = FrozenLmStorage.store(model, "bf16", "single")
    params = dict(model.item_tower.lm.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    lora = [n for n, p in params.items() if p.requires_grad]
    assert frozen and lora and sorted(storage.names) == sorted(frozen)
    assert all(params[n].dtype == torch.bfloat16 for n in frozen)
    assert all(params[n].dtype == torch.float32 for n in lora)  # LoRA and its optimizer state
    assert all(p.dtype == torch.float32 for p in model.user_tower.parameters())
    storage.restore(model)
    params = dict(model.item_tower.lm.named_parameters())
    for name in frozen:
        assert params[name].dtype == torch.float32
        torch.testing.assert_close(params[name], before[name].bfloat16().float(), rtol=0, atol=0)


def test_fp32_runs_and_sharded_backends_keep_their_storage(synth_dir, tmp_path):
    ws = make_run(synth_dir, tmp_path, "end_to_end")
    model = lora_model(ws)
    for precision, strategy in [("fp32", "single"), ("bf16", "zero3"), ("bf16", "fsdp")]:
        assert FrozenLmStorage.store(model, precision, strategy).names == []
    assert FrozenLmStorage.store(model, "bf16", "ddp", "fp32").names == []  # asked to keep
    assert all(p.dtype == torch.float32 for p in model.parameters())
    layers = [m for m in model.item_tower.lm.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(m.cast_input_dtype_enabled for m in layers)  # PEFT's default again
    cached = make_run(synth_dir, tmp_path / "c", "cached")
    assert FrozenLmStorage.store(new_model(cached), "bf16", "single").names == []


def weight_casts(lm, batch) -> tuple[int, torch.Tensor]:
    """(number of dtype-cast ops, pooled output) of one forward + backward under autocast."""
    from torch.profiler import ProfilerActivity, profile

    from distrec.models.encoder import pool

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = lm(**batch).last_hidden_state
        vec = pool(hidden, batch["attention_mask"], "mean")
        vec.sum().backward()
    casts = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    return casts, vec.detach()


def test_bf16_storage_removes_autocasts_copies_of_frozen_weights(synth_dir, tmp_path):
    """Under autocast every frozen fp32 weight is cast on every call; stored in bf16 it is
    not, and the pooled vectors stay what bf16 autocast computed."""
    ws = make_run(synth_dir, tmp_path, "end_to_end")
    d = ws.domains["tiny"]
    ids = d.tokens.input_ids[1:9]
    mask = (torch.arange(ids.shape[1]) < d.tokens.lengths[1:9, None]).long()
    batch = {"input_ids": ids, "attention_mask": mask}
    model = lora_model(ws)
    casts_fp32, vec_fp32 = weight_casts(model.item_tower.lm, batch)
    FrozenLmStorage.store(model, "bf16", "single")
    casts_bf16, vec_bf16 = weight_casts(model.item_tower.lm, batch)
    frozen = [
        m
        for m in model.item_tower.lm.modules()
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad
    ]
    assert len(frozen) >= 36
    assert casts_fp32 - casts_bf16 >= len(frozen)  # at least one cast per frozen linear saved
    assert vec_bf16.dtype == torch.float32  # pooled in fp32 whatever the LM returns
    cos = torch.nn.functional.cosine_similarity(vec_fp32, vec_bf16, dim=-1)
    assert cos.min() > 0.99


def test_the_trainer_restores_the_lm_in_fp32_after_a_bf16_stage(synth_dir, tmp_path):
    ws = make_run(synth_dir, tmp_path, "end_to_end")
    ws = dataclasses.replace(ws, precision="bf16")
    train = ws.cfg.train.model_copy(update={"max_steps": 2})
    ws = dataclasses.replace(ws, cfg=ws.cfg.model_copy(update={"train": train}))
    seen = []

    class Dtypes(TrainHook):
        def on_step(self, trainer, step):
            lm = trainer.accelerator.unwrap_model(trainer.model).item_tower.lm
            seen.append({p.dtype for p in lm.parameters() if not p.requires_grad})

    plan = StagePlan("bf16", {"tiny": 1.0}, ["tiny"], 1, 1e-3)
    # The accelerator of this process is fp32 (accelerate keeps one precision per process):
    # an outer autocast region gives the stage what a bf16 accelerator's would.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model, _ = Trainer(ws, lora_model(ws), plan, [Dtypes()]).fit()
    assert seen and all(s == {torch.bfloat16} for s in seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_the_loss_is_read_at_log_points_and_the_epoch_end_only(synth_dir, tmp_path, monkeypatch):
    ws = make_run(synth_dir, tmp_path, "cached")
    train = ws.cfg.train.model_copy(update={"log_every": 3})
    ws = dataclasses.replace(ws, cfg=ws.cfg.model_copy(update={"train": train}))
    reads, losses = [], []
    real = state_module.sum_over_ranks

    def counted(value):
        reads.append(float(value))
        return real(value)

    monkeypatch.setattr(state_module, "sum_over_ranks", counted)
    trainer = Trainer(
        ws, id_baseline_model(Pipeline(ws)), StagePlan("p", {"tiny-b": 1.0}, [], 1, 1e-3)
    )
    step = trainer.train_step

    def recorded(batch):
        loss, stepped = step(batch)
        losses.append(float(loss.detach()))
        return loss, stepped

    trainer.train_step = recorded
    trainer.train_epoch()
    steps = len(losses)
    assert steps >= 4
    assert len(reads) == steps // 3 + 1  # every log point, then the epoch's end
    assert abs(trainer.state.loss_sum() - sum(losses)) < 1e-4 * steps
    assert trainer.state.pending_loss is None


def test_where_the_loss_is_flushed_does_not_change_a_bit_of_the_epoch_loss():
    # A preempted run flushes at its checkpoint, the uninterrupted one does not: the
    # epoch's loss (and so a resumed run's history) must not depend on that.
    losses = torch.rand(40, generator=torch.Generator().manual_seed(0)) * 7
    flushed_every = []
    for every in (1, 3, 40):
        state = state_module.TrainState(torch.Generator())
        for i, loss in enumerate(losses):
            state.add_loss(loss)
            state.epoch_batches += 1
            if (i + 1) % every == 0:
                state.flush_loss()
        state.flush_loss()
        flushed_every.append(state.running_loss())
    assert flushed_every[0] == flushed_every[1] == flushed_every[2]
    assert abs(flushed_every[0] - losses.double().mean().item()) < 1e-12
