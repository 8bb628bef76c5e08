"""train.compile: the LM and user tower really run compiled, train like eager, deterministically,
and a backend that refuses leaves one clear log line and an eager run."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from distrec.config import config_from_dict
from distrec.distributed.accelerator import build_accelerator
from distrec.train import compile as compile_module
from distrec.train.adapters import add_lm_lora
from distrec.train.stages.pipeline import new_model
from distrec.train.trainer import StagePlan, Trainer
from distrec.train.workspace import Workspace
from tests.conftest import tiny_run_config

STEPS = 3
PARTS = ["base_model.model.item_tower.lm", "base_model.model.user_tower"]


def tiny_encoder(folder: Path) -> str:
    """A random-init 2-layer BERT (dropout 0) with MiniLM's tokenizer."""
    from perf.workloads import random_encoder

    return random_encoder("tiny", folder)


def e2e_run(synth_dir: Path, tmp_path: Path, name: str, **train) -> Workspace:
    """End-to-end fp32 run on the tiny synthetic domains with every dropout at 0, so eager
    and compiled steps compute the same function."""
    model = {
        "mode": "end_to_end",
        "item_encoder": tiny_encoder(tmp_path.parent / "encoder-tiny"),
        "max_text_tokens": 16,
        "id_dropout": 0.0,
        "user_tower": {"layers": 1, "heads": 2, "dropout": 0.0},
    }
    tree = tiny_run_config(
        synth_dir, tmp_path / name, model=model, train={"batch_size": 16, **train}
    )
    tree["peft"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    cfg = config_from_dict(tree)
    accelerator, precision = build_accelerator(cfg)
    return Workspace.open(cfg, accelerator, precision, out=tmp_path / name)


def step_losses(ws: Workspace, steps: int = STEPS) -> tuple[list[float], Trainer]:
    """The first `steps` training losses of a fresh LoRA model (same seed, same batches)."""
    model = add_lm_lora(new_model(ws), ws.cfg, "pretrain")
    trainer = Trainer(ws, model, StagePlan("pretrain", {"tiny": 1.0}, ["tiny"], 1, 1e-3))
    trainer.model.train()
    batches = itertools.islice(iter(trainer.loader), steps)
    losses = [trainer.train_step(batch)[0].item() for batch in batches]
    trainer.loader.close()
    return losses, trainer


@pytest.fixture(scope="module")
def eager_losses(synth_dir, tmp_path_factory) -> list[float]:
    return step_losses(e2e_run(synth_dir, tmp_path_factory.mktemp("eager"), "eager"))[0]


def test_compiled_training_matches_eager_and_repeats_exactly(synth_dir, tmp_path, eager_losses):
    from torch._dynamo.utils import counters

    counters.clear()
    ws = e2e_run(synth_dir, tmp_path, "compiled", compile=True)
    first, trainer = step_losses(ws)
    assert trainer.execution.active == PARTS
    assert all(g.calls >= STEPS for g in trainer.execution.compiled)
    lm = trainer.accelerator.unwrap_model(trainer.model).base_model.model.item_tower.lm
    assert lm._compiled_call_impl is trainer.execution.compiled[0]
    stats = compile_module.compile_stats()
    assert stats["frames_compiled"] > 0 and stats["unique_graphs"] > 0
    # dynamic=True: the batches' changing shapes (items x longest text) reuse the graphs.
    assert stats["recompiles"] <= 2, stats
    assert first == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    assert first != pytest.approx(eager_losses[:1] * STEPS)  # the steps do differ
    trainer.execution.restore()
    assert lm._compiled_call_impl is None  # the stage hands a plain module on
    again, _ = step_losses(e2e_run(synth_dir, tmp_path, "again", compile=True))
    assert again == first  # same seed, same compiled losses, bit for bit


def broken_backend(gm, example_inputs):
    raise RuntimeError("no working C++ compiler found")


def refusing_compile(*args, **kwargs):
    raise RuntimeError("torch.compile is not supported on this platform")


@pytest.mark.parametrize(
    "breakage",
    [
        ("BACKEND", broken_backend, "no working C++ compiler found"),
        ("torch.compile", refusing_compile, "not supported on this platform"),
    ],
    ids=["backend raises at the first call", "torch.compile raises"],
)
def test_a_refusing_backend_falls_back_to_eager_with_one_clear_line(
    synth_dir, tmp_path, eager_losses, capsys, monkeypatch, breakage
):
    target, replacement, reason = breakage
    if target == "BACKEND":
        monkeypatch.setattr(compile_module, "BACKEND", replacement)
    else:
        monkeypatch.setattr(torch, "compile", replacement)
    losses, trainer = step_losses(e2e_run(synth_dir, tmp_path, "fallback", compile=True))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "train.compile:" in ln]
    assert len(lines) == 2, lines  # one per part: the LM and the user tower
    assert all(reason in ln and "train.compile=false" in ln for ln in lines), lines
    assert all("training continues eager" in ln for ln in lines)
    assert trainer.execution.active == []
    assert losses == pytest.approx(eager_losses, rel=1e-6)


def test_compile_off_leaves_every_module_eager(synth_dir, tmp_path):
    ws = e2e_run(synth_dir, tmp_path, "off")
    model = add_lm_lora(new_model(ws), ws.cfg, "pretrain")
    execution = compile_module.prepare_execution(model, ws.cfg)
    assert execution.compiled == []
    assert all(m._compiled_call_impl is None for m in model.modules())


def test_fit_with_compile_evaluates_like_eager_and_hands_back_a_plain_model(synth_dir, tmp_path):
    """A whole stage (train, validation through the compiled LM in eval mode, best weights):
    the same metrics as eager, and the returned model runs eager."""
    entries = {}
    for name, on in (("eager", False), ("compiled", True)):
        ws = e2e_run(synth_dir, tmp_path, name, compile=on, max_steps=STEPS)
        model = add_lm_lora(new_model(ws), ws.cfg, "pretrain")
        plan = StagePlan("pretrain", {"tiny": 1.0}, ["tiny"], 1, 1e-3)
        trained, result = Trainer(ws, model, plan).fit()
        assert all(m._compiled_call_impl is None for m in trained.modules())
        entries[name] = result.history[-1]
    eager, compiled = entries["eager"], entries["compiled"]
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)
    assert compiled["valid_ndcg@10"] == pytest.approx(eager["valid_ndcg@10"], abs=1e-4)
