"""The Trainer's hook points and typed state: what runs when, and what a fit returns."""

import torch

from distrec.train.stages.baselines import id_baseline_model
from distrec.train.stages.pipeline import Pipeline
from distrec.train.trainer import StagePlan, Trainer, TrainHook
from tests.train.test_modes import make_run


class Recorder(TrainHook):
    def __init__(self):
        self.events = []

    def on_step(self, trainer, step):
        # Before zero_grad: the step's gradients are still there for a hook to read.
        grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
        self.events.append(("step", step, any(g is not None and g.abs().sum() > 0 for g in grads)))

    def on_epoch_end(self, trainer, entry, last):
        self.events.append(("epoch", entry["epoch"], last))

    def close(self, trainer):
        self.events.append(("close",))


def test_hooks_run_at_every_step_epoch_end_and_close(synth_dir, tmp_path):
    ws = make_run(synth_dir, tmp_path, "cached")
    plan = StagePlan("hooked", {"tiny-b": 1.0}, ["tiny-b"], 2, 1e-3)
    recorder = Recorder()
    trainer = Trainer(ws, id_baseline_model(Pipeline(ws)), plan, [recorder])
    per_epoch = len(trainer.loader)
    model, result = trainer.fit()
    steps = [e for e in recorder.events if e[0] == "step"]
    assert [e[1] for e in steps] == list(range(1, 2 * per_epoch + 1))
    assert all(e[2] for e in steps)  # gradients visible at every step
    epochs = [e for e in recorder.events if e[0] == "epoch"]
    assert epochs == [("epoch", 1, False), ("epoch", 2, True)]
    assert recorder.events[-1] == ("close",)
    assert result.steps == 2 * per_epoch and len(result.history) == 2
    assert isinstance(model, torch.nn.Module) and not model.item_tower.reads_text


def test_pretrain_train_fraction_is_honoured(synth_dir, tmp_path):
    """stages.pretrain.train_fraction trains on that share of the source users."""
    import json

    import yaml

    from distrec.train.entry import run_training
    from tests.conftest import tiny_run_config

    targets = []
    for fraction in (1.0, 0.5):
        out = tmp_path / f"fraction-{fraction}"
        stages = {"pretrain": {"epochs": 1, "train_fraction": fraction}, "zero_shot": False}
        stages |= {"adapt": {"enabled": False}, "baselines": []}
        cfg = tiny_run_config(synth_dir, out, stages=stages)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        assert run_training(str(tmp_path / "c.yaml")) == 0
        record = json.loads((out / "metrics.json").read_text())["stages"]["pretrain"]
        targets.append(record["train_targets_per_epoch"])
    assert 0.3 * targets[0] < targets[1] < 0.7 * targets[0]
