"""train.report_to: every tracker holds the epoch metrics of metrics.json, none writes when the
list is empty, and a missing package stops the run before it trains."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from distrec.config import ConfigError, config_from_dict
from distrec.train.entry import run_training
from distrec.train.trackers import check_trackers, flat_config, mlflow_name
from tests.conftest import tiny_run_config

# aim is optional (not in the trackers extra: it would downgrade filelock and dateutil).
HAS_AIM = importlib.util.find_spec("aim") is not None
TRACKERS = ["tensorboard", "wandb", "mlflow", *(["aim"] if HAS_AIM else [])]
STAGES = {"pretrain": {"epochs": 2}, "zero_shot": False, "adapt": {"enabled": False}}
TRACKER_FILES = ("events", "wandb", "mlruns", "aim")


def tracked_run(tmp: Path, synth_dir: Path, report_to: list[str]) -> tuple[Path, dict]:
    """A two-epoch pretraining run reporting to `report_to`: (run folder, metrics.json)."""
    out = tmp / "run"
    stages = {**STAGES, "baselines": []}
    cfg = tiny_run_config(synth_dir, out, report_to, stages=stages, train={"log_every": 2})
    (tmp / "run.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as env:
        # offline, quiet, into the run folder: nothing leaves the machine
        for name in ("WANDB_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
            env.delenv(name, raising=False)
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.setenv("WANDB_CONSOLE", "off")
        env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # restored afterwards
        assert run_training(str(tmp / "run.yaml")) == 0
    return out, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, synth_dir):
    return tracked_run(tmp_path_factory.mktemp("tracked"), synth_dir, TRACKERS)


def expected(metrics: dict) -> dict[str, list[tuple[int, float]]]:
    """metrics.json's pretraining history as tracker keys -> [(epoch, value)]."""
    metric = metrics["config"]["eval"]["metric"]
    history = metrics["stages"]["pretrain"]["history"]
    return {
        "pretrain/loss": [(e["epoch"], e["loss"]) for e in history],
        f"pretrain/valid_{metric}": [(e["epoch"], e[f"valid_{metric}"]) for e in history],
    }


def tensorboard_scalars(out: Path, key: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "events"))
    events.Reload()
    return [(s.step, s.value) for s in events.Scalars(key)]


def wandb_rows(out: Path) -> list[dict]:
    """The history rows of the one offline run: its .wandb file is a LevelDB-style log
    (7-byte header, 32 KiB blocks of checksum/length/type records) of protobuf Records."""
    from wandb.proto.wandb_internal_pb2 import Record

    (path,) = out.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, chunk, rows = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = Record.FromString(chunk)
            if record.WhichOneof("record_type") == "history":
                items = record.history.item  # wandb 0.31 writes the key as a nested_key path
                rows.append(
                    {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in items}
                )
            chunk = b""
    return rows


def wandb_scalars(out: Path, key: str) -> list[tuple[int, float]]:
    return [(row["step"], row[key]) for row in wandb_rows(out) if key in row]


def mlflow_client(out: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file:{out / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("distrec").experiment_id])
    return client, run


def mlflow_scalars(out: Path, key: str) -> list[tuple[int, float]]:
    client, run = mlflow_client(out)
    history = client.get_metric_history(run.info.run_id, mlflow_name(key))
    return sorted((m.step, m.value) for m in history)


def aim_run(out: Path):
    """The one run of the Aim repo under the run folder (read-only)."""
    from aim import Repo, Run

    (run_hash,) = Repo(str(out / "aim")).list_all_runs()
    return Run(run_hash, repo=str(out / "aim"), read_only=True)


def test_every_tracker_holds_the_epoch_metrics_of_metrics_json(tracked):
    out, metrics = tracked
    for key, want in expected(metrics).items():
        assert len(want) == 2 and want[0] != want[1]
        assert wandb_scalars(out, key) == want, key
        assert mlflow_scalars(out, key) == want, key
        # TensorBoard keeps float32 scalars: the same numbers to float32 precision
        board = tensorboard_scalars(out, key)
        assert [s for s, _ in board] == [s for s, _ in want], key
        assert [v for _, v in board] == pytest.approx([v for _, v in want], rel=1e-6), key


def test_step_losses_reach_every_tracker_under_the_run_folder(tracked):
    out, _ = tracked
    board = tensorboard_scalars(out, "pretrain/train_loss")
    assert len(board) >= 2 and [s for s, _ in board] == sorted(s for s, _ in board)
    assert [s for s, _ in wandb_scalars(out, "pretrain/train_loss")] == [s for s, _ in board]
    assert [s for s, _ in mlflow_scalars(out, "pretrain/train_loss")] == [s for s, _ in board]


def test_the_run_config_is_every_trackers_hyper_parameters(tracked):
    out, metrics = tracked
    _, run = mlflow_client(out)
    assert run.info.run_name == "run"  # named after the output folder
    assert run.data.params["train.lr"] == str(metrics["config"]["train"]["lr"])
    assert json.loads(run.data.params["train.report_to"]) == TRACKERS
    flat = flat_config(config_from_dict(metrics["config"]))
    assert all(isinstance(v, bool | int | float | str | type(None)) for v in flat.values())
    assert json.loads(json.dumps(flat)) == flat


@pytest.mark.skipif(not HAS_AIM, reason="aim is optional: pip install 'distrec[aim]'")
def test_aim_files_the_run_under_the_project_in_the_run_folder(tracked):
    # Only the run's name and experiment: with aim 3.29.1 on Python 3.11 here, Aim's own
    # Run.track values did not read back through Repo (outside distrec too), so the metric
    # values are not compared.
    run = aim_run(tracked[0])
    assert (run.name, run.experiment) == ("run", "distrec")


def test_an_empty_report_to_writes_no_tracker_files(tmp_path, synth_dir):
    out, metrics = tracked_run(tmp_path, synth_dir, [])
    assert metrics["stages"]["pretrain"]["history"]
    assert not [name for name in TRACKER_FILES if (out / name).exists()]


def test_a_missing_tracker_package_fails_before_training_with_the_pip_command(
    tmp_path, synth_dir, monkeypatch
):
    from accelerate.utils import imports

    monkeypatch.setattr(imports, "is_wandb_available", lambda: False)
    out = tmp_path / "run"
    cfg = tiny_run_config(synth_dir, out, ["tensorboard", "wandb"])
    with pytest.raises(ConfigError, match=r"\['wandb'\] not installed.*distrec\[trackers\]"):
        check_trackers(config_from_dict(cfg))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="wandb: pip install 'distrec"):
        run_training(str(tmp_path / "run.yaml"))
    assert not out.exists()  # refused before the run folder was made


def test_old_output_tensorboard_still_runs_with_a_warning_naming_report_to():
    with pytest.warns(FutureWarning, match=r"train.report_to: \[\]"):
        assert config_from_dict({"output": {"tensorboard": False}}).train.report_to == []
    with pytest.warns(FutureWarning, match=r"\[tensorboard\]"):
        assert config_from_dict({"output": {"tensorboard": True}}).train.report_to == [
            "tensorboard"
        ]
    with pytest.raises(
        ConfigError, match=r"output\.tensorboard=True was replaced by train\.report_to"
    ):
        config_from_dict({"output": {"tensorboard": True}, "train": {"report_to": []}})
