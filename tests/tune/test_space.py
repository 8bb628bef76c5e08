"""The search space is checked against the run config before Ray starts."""

import os
import signal
from pathlib import Path

import pytest
import yaml

from distrec.cli import main
from distrec.config import ConfigError
from distrec.config.load import config_from_dict
from distrec.tune.space import apply_params, check_searcher, parse_space, validate_space
from distrec.tune.sweep import check_out_dir, check_sweep, max_epochs, storage_of
from tests.conftest import tiny_run_config

SYNTH = Path("/nonexistent-synth")  # shape checks only: nothing here reads the data


def tree(**tune) -> dict:
    t = tiny_run_config(
        SYNTH,
        Path("/tmp/unused"),
        stages={"adapt": {"epochs": 6, "mode": "lora"}},  # auto trains two adapt models
    )
    t["tune"] = {"stage": "adapt", **tune}
    return t


def check(space: dict, **tune) -> list:
    t = tree(search_space=space, **tune)
    return check_sweep(t, config_from_dict(t))


def test_every_spec_kind_parses_and_validates():
    params = check(
        {
            "train.lr": {"loguniform": [1e-4, 1e-2]},
            "model.temperature": {"choice": [0.03, 0.05]},
            "peft.r": {"grid": [4, 8]},
            "data.max_history": {"randint": [5, 12]},
            "model.id_dropout": {"uniform": [0.1, 0.6]},
            "data.mixture.tiny": {"uniform": [0.5, 2.0]},
        }
    )
    assert [p.kind for p in params] == [
        "loguniform",
        "choice",
        "grid",
        "randint",
        "uniform",
        "uniform",
    ]


def test_unknown_key_gets_did_you_mean_before_ray():
    with pytest.raises(ConfigError, match=r"train\.lrr.*did you mean 'train\.lr'"):
        check({"train.lrr": {"loguniform": [1e-4, 1e-2]}})


def test_value_the_schema_refuses_names_key_and_value():
    with pytest.raises(ConfigError, match=r"tune.search_space.train.lr: .*refuses train.lr=-1.0"):
        check({"train.lr": {"uniform": [-1.0, 1.0]}})
    # every option of a choice is tried, not only the first
    with pytest.raises(ConfigError, match=r"pooling='max'"):
        check({"model.pooling": {"choice": ["mean", "max"]}})


def test_continuous_spec_on_an_int_field_suggests_randint():
    with pytest.raises(ConfigError, match=r"model.dim takes integers: use \{randint"):
        check({"model.dim": {"uniform": [32.0, 64.0]}})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (0.01, "expected one mapping"),
        ({"loguniform": [1e-4, 1e-2], "choice": [1]}, "expected one mapping"),
        ({"normal": [0, 1]}, "unknown spec 'normal'"),
        ({"choice": []}, "non-empty list"),
        ({"uniform": [1e-2]}, r"expected \[lo, hi\]"),
        ({"uniform": [1e-2, 1e-4]}, "lo must be below hi"),
        ({"loguniform": [0, 1e-2]}, "must be > 0"),
        ({"randint": [1.5, 4]}, "must be integers"),
    ],
)
def test_bad_spec_shapes_name_the_key_and_the_fix(spec, message):
    with pytest.raises(ConfigError, match=r"tune\.search_space\.train\.lr") as err:
        parse_space({"train.lr": spec})
    assert err.match(message)


def test_empty_space_and_sweep_owned_keys_are_refused():
    with pytest.raises(ConfigError, match="search_space is empty"):
        parse_space({})
    with pytest.raises(ConfigError, match=r"output\.\* cannot be swept"):
        parse_space({"output.dir": {"choice": ["a", "b"]}})
    with pytest.raises(ConfigError, match="cannot be swept; prepare each variant"):
        check({"data.prepared_dir": {"choice": ["a", "b"]}})


def test_stage_must_run_and_metric_must_be_reported():
    with pytest.raises(ConfigError, match=r"tune.stage='baseline_id_target_only'.*does not run"):
        t = tree(search_space={"train.lr": {"choice": [1e-3]}}, stage="baseline_id_target_only")
        t["stages"]["baselines"] = ["popularity"]
        check_sweep(t, config_from_dict(t))
    with pytest.raises(ConfigError, match=r"tune.metric='valid.ndcg@5'"):
        check({"train.lr": {"choice": [1e-3]}}, metric="valid.ndcg@5")


def test_grid_with_optuna_is_refused_and_missing_optuna_is_explained(monkeypatch):
    params = parse_space({"peft.r": {"grid": [4, 8]}})
    with pytest.raises(ConfigError, match="Optuna cannot sample"):
        check_searcher(params, "optuna")
    monkeypatch.setitem(__import__("sys").modules, "optuna", None)
    with pytest.raises(ConfigError, match=r"pip install 'distrec\[optuna\]'"):
        check({"train.lr": {"choice": [1e-3]}}, search_alg="optuna")


def test_sampled_values_keep_their_types():
    import numpy as np

    out = apply_params(
        tree(),
        {
            "train.lr": 0.00012345678901234,
            "model.dim": np.int64(48),
            "model.pooling": "cls",
            "eval.ks": [10, 20],
        },
    )
    cfg = config_from_dict(out)
    assert cfg.train.lr == 0.00012345678901234 and cfg.model.dim == 48
    assert cfg.model.pooling == "cls" and cfg.eval.ks == [10, 20]


def test_randint_is_inclusive_and_ranges_stay_in_bounds():
    import random

    from distrec.tune.space import ray_space

    params = parse_space(
        {"data.max_history": {"randint": [3, 5]}, "train.lr": {"loguniform": [1e-4, 1e-2]}}
    )
    space = ray_space(params)
    random.seed(0)
    ints = {space["data.max_history"].sample() for _ in range(200)}
    lrs = [space["train.lr"].sample() for _ in range(200)]
    assert ints == {3, 4, 5}
    assert all(1e-4 <= v <= 1e-2 for v in lrs)


def test_asha_budget_is_the_largest_swept_epoch_count():
    t = tree(search_space={"stages.adapt.epochs": {"choice": [3, 9]}})
    cfg = config_from_dict(t)
    assert max_epochs(t, cfg, check_sweep(t, cfg)) == 9
    t = tree(search_space={"train.lr": {"choice": [1e-3]}})
    cfg = config_from_dict(t)
    assert max_epochs(t, cfg, check_sweep(t, cfg)) == 6


def test_out_dir_is_never_silently_reused(tmp_path):
    check_out_dir(tmp_path / "new")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a sweep folder"):
        check_out_dir(tmp_path / "other")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    with pytest.raises(ConfigError, match="--resume"):
        check_out_dir(tmp_path / "sweep")


def test_storage_uri_passes_through(tmp_path):
    t = tree(search_space={"train.lr": {"choice": [1e-3]}}, storage="s3://bucket/sweeps")
    assert storage_of(config_from_dict(t), tmp_path) == "s3://bucket/sweeps"
    t = tree(search_space={"train.lr": {"choice": [1e-3]}})
    assert storage_of(config_from_dict(t), tmp_path / "x") == str((tmp_path / "x").resolve())


def test_cli_reports_a_bad_space_without_starting_ray(tmp_path, capsys):
    import sys

    t = tree(search_space={"model.temprature": {"choice": [0.05]}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(t))
    assert main(["tune", "--config", str(path), "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'model.temperature'" in err
    assert not (tmp_path / "sw").exists()
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_cli_resume_needs_a_sweep_folder(tmp_path, capsys):
    assert main(["tune", "--resume", str(tmp_path)]) == 2
    assert "not a sweep started by distrec tune" in capsys.readouterr().err


def test_shipped_demo_sweep_is_valid():
    from distrec.config.load import read_yaml

    root = Path(__file__).resolve().parents[2]
    t = read_yaml(root / "configs" / "tune" / "demo.yaml")
    cfg = config_from_dict(t)
    params = check_sweep(t, cfg)
    assert cfg.tune.num_samples >= 8 and cfg.tune.scheduler == "asha"
    assert {p.key for p in params} >= {"train.lr"}
    validate_space(t, params)


def test_fault_injection_is_keyed_by_trial_index(monkeypatch):
    from distrec.tune.trainable import CrashPlan, crash_plan, trial_index

    assert trial_index("3f2a1_00004") == 4 and trial_index("0f63799e") is None
    monkeypatch.setenv("DISTREC_TUNE_CRASH", "1@2,4@3*,5@1!")
    assert crash_plan(1) == CrashPlan(2) and crash_plan(4) == CrashPlan(3, every_attempt=True)
    assert crash_plan(5) == CrashPlan(1, kill=True)
    assert crash_plan(0) is None and crash_plan(None) is None
    once, always = CrashPlan(2), CrashPlan(3, every_attempt=True)
    assert once.fires(2, 0) and not once.fires(3, 0)
    assert not once.fires(2, 1)  # first attempt only, not once restored
    assert always.fires(5, 2) and not always.fires(2, 0)  # every attempt


def test_an_injected_kill_takes_only_the_last_rank(monkeypatch):
    from distrec.tune import trainable

    killed = []
    monkeypatch.setattr(trainable.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    plan = trainable.CrashPlan(2, kill=True)
    trainable.inject_crash(plan, 2, rank=0, world=2)  # rank 0 goes on, into a dead group
    assert killed == []
    trainable.inject_crash(plan, 2, rank=1, world=2)
    assert killed == [(os.getpid(), signal.SIGKILL)]
    with pytest.raises(trainable.InjectedCrash, match="after epoch 2"):
        trainable.inject_crash(trainable.CrashPlan(2), 2, rank=0, world=2)


def test_sweeping_the_adapt_stage_of_auto_mode_is_refused():
    t = tree(search_space={"train.lr": {"choice": [1e-3, 2e-3]}})
    t["stages"]["adapt"]["mode"] = "auto"
    with pytest.raises(
        (ConfigError, ValueError), match=r"tune.stage=adapt with stages.adapt.mode=auto"
    ):
        config_from_dict(t)
