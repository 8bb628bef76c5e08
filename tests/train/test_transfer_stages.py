"""The transfer techniques in real runs on the tiny synthetic domains: distillation,
domain-adversarial pretraining and knowledge-graph fusion each change the numbers, and
each does what it says (a distilled student beats the same student alone; alignment never
reads the target's interactions; the exported base carries no critic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import distrec.train.trainer as trainer_module
from distrec.train.domains import DomainData
from distrec.train.entry import run_training
from distrec.train.trainer import build_loader
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
    cfg = tiny_run_config(synth_dir, tmp_path / name, report_to=[], **sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_training(str(path)) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())["stages"]


@pytest.fixture(scope="module")
def plain(synth_dir, tmp_path_factory):
    """(stage records, exported base weights) of pretraining without any technique."""
    tmp = tmp_path_factory.mktemp("plain")
    stages = run(tmp, synth_dir, "plain", stages=PRETRAIN_ONLY)
    return stages, base_of(tmp / "plain")


def base_of(out: Path) -> dict:
    return load_file(str(out / "export" / "base" / "model.safetensors"))


def losses(stages: dict, stage: str = "pretrain") -> list[float]:
    return [h["loss"] for h in stages[stage]["history"]]


def test_adversarial_pretraining_logs_accuracy_and_reads_no_target_interactions(
    synth_dir, tmp_path, plain, monkeypatch
):
    read, streamed = [], []
    original = DomainData.sequences

    def spy(self):
        read.append(self.name)
        return original(self)

    def spy_loader(ws, plan, with_tokens):
        streamed.extend(plan.train_domains)
        return build_loader(ws, plan, with_tokens)

    monkeypatch.setattr(DomainData, "sequences", spy)
    monkeypatch.setattr(trainer_module, "build_loader", spy_loader)
    adversarial = {"weight": 0.5, "on": "item", "schedule": "linear"}
    stages = run(
        tmp_path, synth_dir, "adv", model={"domain_adversarial": adversarial}, stages=PRETRAIN_ONLY
    )
    assert streamed and "tiny-b" not in streamed, streamed
    assert "tiny-b" not in read, "pretraining with alignment read the target's interactions"
    history = stages["pretrain"]["history"]
    assert all(0.0 <= h["domain_accuracy"] <= 1.0 for h in history)
    assert [h["reversal"] for h in history] == pytest.approx([0.5, 1.0])
    assert 0.0 <= stages["pretrain"]["domain_probe"]["accuracy"] <= 1.0
    base, plain_base = base_of(tmp_path / "adv"), plain[1]
    assert set(base) == set(plain_base), "the exported base must not carry the critic"
    # The critic starts apart from the towers (forked RNG) and the data order is the same,
    # so the towers differ from plain pretraining only through the reversed gradient.
    assert not torch.equal(
        base["item_tower.proj.fc_in.weight"], plain_base["item_tower.proj.fc_in.weight"]
    )


def test_user_level_alignment_runs(synth_dir, tmp_path, plain):
    adversarial = {"weight": 0.5, "on": "user", "history": 5, "items": 32}
    stages = run(
        tmp_path,
        synth_dir,
        "adv-user",
        model={"domain_adversarial": adversarial},
        stages=PRETRAIN_ONLY,
    )
    assert losses(stages) != losses(plain[0])
    assert stages["pretrain"]["domain_probe"]["on"] == "user"


def test_kg_fusion_trains_and_changes_the_numbers(synth_dir, tmp_path, plain):
    stages = run(
        tmp_path,
        synth_dir,
        "kg",
        model={"kg": {"aggregate": "mean"}},
        data={"domains": KG_DOMAINS},
        stages=PRETRAIN_ONLY,
    )
    assert losses(stages) != losses(plain[0])
    base = base_of(tmp_path / "kg")
    # The relation maps start at the identity and the gate at random: training moved them,
    # so the entity path carried gradient (the fusion is trained, not a passenger).
    maps = base["item_tower.kg.relation_maps"]
    assert not torch.allclose(maps[1], torch.eye(maps.shape[1]), atol=1e-4)


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


def test_a_changed_graph_is_refused_when_the_run_is_loaded(synth_dir, tmp_path):
    from distrec.config import ConfigError
    from distrec.train.inference import evaluate_run

    stages = {**PRETRAIN_ONLY, "pretrain": {"epochs": 1}}
    run(tmp_path, synth_dir, "kg1", model={"kg": {}}, data={"domains": KG_DOMAINS}, stages=stages)
    out = tmp_path / "kg1"
    assert json.loads((out / "kg.json").read_text())["relations"] == ["<pad>", "genre"]
    evaluate_run(str(out), domain="tiny")  # the same data: loads
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["data"]["domains"][0]["kg_fields"] = {"genre": "genre", "title": "title"}
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"kg.json: the knowledge graph rebuilt .* changed"):
        evaluate_run(str(out), domain="tiny")
