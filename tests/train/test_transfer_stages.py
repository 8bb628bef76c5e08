"""The transfer techniques in real runs on the tiny synthetic domains: distillation,
domain-adversarial pretraining and knowledge-graph fusion each change the numbers, and
each does what it says (a distilled student beats the same student alone; alignment never
reads the target's interactions; the exported base carries no critic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from distrec.train.domains import DomainData
from distrec.train.entry import run_training
from tests.conftest import tiny_run_config

PRETRAIN_ONLY = {
    "pretrain": {"epochs": 2},
    "zero_shot": False,
    "adapt": {"enabled": False},
    "baselines": [],
}
KG_DOMAINS = [
    {"name": "tiny", "format": "prepared", "kg_fields": {"genre": "genre"}},
    {"name": "tiny-b", "format": "prepared", "kg_fields": {"genre": "genre"}},
]


def run(tmp_path: Path, synth_dir: Path, name: str, **sections) -> dict:
    cfg = tiny_run_config(synth_dir, tmp_path / name, output={"tensorboard": False}, **sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_training(str(path)) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())["stages"]


@pytest.fixture(scope="module")
def plain(synth_dir, tmp_path_factory):
    return run(tmp_path_factory.mktemp("plain"), synth_dir, "plain", stages=PRETRAIN_ONLY)


def losses(stages: dict, stage: str = "pretrain") -> list[float]:
    return [h["loss"] for h in stages[stage]["history"]]


def test_adversarial_pretraining_logs_accuracy_and_reads_no_target_interactions(
    synth_dir, tmp_path, plain, monkeypatch
):
    read = []
    original = DomainData.sequences

    def spy(self):
        read.append(self.name)
        return original(self)

    monkeypatch.setattr(DomainData, "sequences", spy)
    adversarial = {"weight": 0.5, "on": "item", "schedule": "linear"}
    stages = run(
        tmp_path, synth_dir, "adv", model={"domain_adversarial": adversarial}, stages=PRETRAIN_ONLY
    )
    assert "tiny-b" not in read, "pretraining with alignment read the target's interactions"
    history = stages["pretrain"]["history"]
    assert all(0.0 <= h["domain_accuracy"] <= 1.0 for h in history)
    assert [h["reversal"] for h in history] == pytest.approx([0.5, 1.0])
    assert losses(stages) != losses(plain)
    assert 0.0 <= stages["pretrain"]["domain_probe"]["accuracy"] <= 1.0
    base = load_file(str(tmp_path / "adv" / "export" / "base" / "model.safetensors"))
    assert not any(k.startswith("critic") for k in base)


def test_user_level_alignment_runs(synth_dir, tmp_path, plain):
    adversarial = {"weight": 0.5, "on": "user", "history": 5, "items": 32}
    stages = run(
        tmp_path,
        synth_dir,
        "adv-user",
        model={"domain_adversarial": adversarial},
        stages=PRETRAIN_ONLY,
    )
    assert losses(stages) != losses(plain)
    assert stages["pretrain"]["domain_probe"]["on"] == "user"


def test_kg_fusion_changes_the_numbers(synth_dir, tmp_path, plain):
    stages = run(
        tmp_path,
        synth_dir,
        "kg",
        model={"kg": {"aggregate": "mean"}},
        data={"domains": KG_DOMAINS},
        stages=PRETRAIN_ONLY,
    )
    assert losses(stages) != losses(plain)


DISTILL = {
    "baselines": [],
    "zero_shot": False,
    "pretrain": {"epochs": 4},
    "adapt": {"epochs": 6, "mode": "full"},
    # The student sees 30% of the target's users; the teacher was adapted on all of them.
    "distill": {
        "enabled": True,
        "epochs": 12,
        "train_fraction": 0.3,
        "lr": 0.005,
        "cache_teacher": True,
        "student": {"dim": 16, "temperature": 0.1},
    },
}


def test_a_distilled_student_beats_the_same_student_alone(synth_dir, tmp_path):
    stages = run(tmp_path, synth_dir, "distill", stages=DISTILL)
    taught, alone = stages["distill"], stages["distill_alone"]
    assert taught["test"]["ndcg@10"] > alone["test"]["ndcg@10"] + 0.01, (taught, alone)
    assert taught["valid"]["ndcg@10"] > alone["valid"]["ndcg@10"]
    for record in (taught, alone):
        assert record["student"]["params"] < 0.25 * record["teacher_serving"]["params"]
        assert record["student"]["users_per_s"] > 0
    out = tmp_path / "distill"
    section = yaml.safe_load((out / "export" / "tiny-b-distill" / "model.yaml").read_text())
    assert section["model"]["architecture"] == "id_only" and section["model"]["dim"] == 16
    assert list((out / "distill").glob("teacher-tiny-b-*.safetensors"))
    # The export rebuilds from its own model section and scores what the stage recorded.
    from distrec.train.inference import evaluate_run

    text = evaluate_run(str(out), export="distill")
    got = float(next(line.split()[1] for line in text.splitlines() if "ndcg@10" in line))
    assert got == pytest.approx(taught["test"]["ndcg@10"], abs=1e-4)
