"""`distrec tune --resume` refuses what it cannot continue, before Ray starts."""

import json
import sys

import pytest
import yaml

from distrec.cli import main
from distrec.tune.resume import tree_changes


def sweep_folder(tmp_path, tree: dict, overrides: list[str]):
    """A sweep folder as `distrec tune` leaves it, for a config file in tmp_path."""
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(tree))
    out = tmp_path / "sweep"
    out.mkdir()
    state = {"config": "sweep.yaml", "overrides": overrides, "cwd": str(tmp_path)}
    applied = json.loads(json.dumps(tree))
    applied["train"]["lr"] = 0.002  # what the override below makes of it
    (out / "sweep.json").write_text(json.dumps({**state, "tree": applied}))
    return out


TREE = {
    "seed": 0,
    "train": {"lr": 0.001, "batch_size": 32},
    "tune": {"search_space": {"model.temperature": {"choice": [0.05, 0.1]}}},
}


def test_tree_changes_names_each_changed_key():
    new = {**TREE, "seed": 1, "train": {"lr": 0.001}, "extra": [1]}
    assert tree_changes(TREE, new) == [
        "extra: '<unset>' -> [1]",
        "seed: 0 -> 1",
        "train.batch_size: 32 -> '<unset>'",
    ]
    assert tree_changes(TREE, json.loads(json.dumps(TREE))) == []


def test_resume_refuses_a_config_changed_since_the_start(tmp_path, capsys):
    out = sweep_folder(tmp_path, TREE, ["train.lr=0.002"])
    changed = {**TREE, "tune": {"search_space": {"model.temperature": {"choice": [0.05]}}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(changed))
    assert main(["tune", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "changed since the sweep started" in err
    assert "tune.search_space.model.temperature.choice: [0.05, 0.1] -> [0.05]" in err
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_resume_refuses_a_finished_sweep(tmp_path, capsys):
    out = sweep_folder(tmp_path, TREE, ["train.lr=0.002"])
    (out / "results.csv").write_text("trial_id\n")
    assert main(["tune", "--resume", str(out)]) == 2
    assert "the sweep finished" in capsys.readouterr().err


@pytest.mark.parametrize("gone", [False, True])
def test_resume_checks_pass_for_the_unchanged_or_a_deleted_config(tmp_path, gone):
    from distrec.tune.resume import check_resumable

    out = sweep_folder(tmp_path, TREE, ["train.lr=0.002"])
    if gone:
        (tmp_path / "sweep.yaml").unlink()
    check_resumable(out, json.loads((out / "sweep.json").read_text()))
