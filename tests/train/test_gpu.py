"""CUDA-only checks (`pytest -m gpu`; skipped without CUDA, deselected by `make test`): a bf16
end-to-end LoRA step and a cached step on the GPU, evaluation equal to the CPU's, and ZeRO-3
in one process. Tiny synthetic domains, the real MiniLM encoder: seconds each on a GPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, python, tiny_run_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

NO_DROPOUT = {"id_dropout": 0.0, "user_tower": {"layers": 1, "heads": 2, "dropout": 0.0}}
E2E = {"mode": "end_to_end", "max_text_tokens": 16, "lm_dropout": 0.0, **NO_DROPOUT}
LORA = {"method": "lora", "r": 4, "dropout": 0.0}
STEPS = 12
# GPU (TF32-free fp32, different reduction order) vs CPU ranking metrics on 160 users.
METRIC_TOL = 5e-3


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one precision per process: each test builds its own state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def run_config(synth_dir: Path, out: Path, precision: str, model: dict) -> dict:
    """The tiny two-domain run config at `precision`, dropout off, LoRA r=4."""
    cfg = tiny_run_config(synth_dir, out, model=model, peft=LORA)
    cfg["train"].update(precision=precision, batch_size=32, lr=3e-3)
    cfg["train"]["report_to"] = []
    # Never the shared test cache: GPU-computed LM features must not feed the CPU tests.
    cfg["cache_dir"] = str(out / "features")
    return cfg


def workspace(cfg: dict, out: Path):
    from distrec.config import config_from_dict
    from perf.common import build_run

    return build_run(config_from_dict(cfg), out, ["tiny", "tiny-b"])


def train_steps(ws, model, steps: int = STEPS) -> tuple[list[float], torch.nn.Module]:
    """Each step's loss from the product's Trainer on `tiny`, and the model it trained."""
    from perf.bench_train import RunningLoss, prepared_trainer, train_plan

    running = RunningLoss()
    trainer = prepared_trainer(ws, model, train_plan(ws, "tiny"), steps, [running])
    trainer.train_epoch()
    after = [*running.before[1:], trainer.state.loss_sum()]
    return [b - a for a, b in zip(running.before, after, strict=True)], trainer.model


def assert_learns(losses: list[float]) -> None:
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses), losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses


def test_bf16_end_to_end_lora_steps_on_cuda(synth_dir, tmp_path):
    from perf.bench_train import end_to_end_model

    ws = workspace(run_config(synth_dir, tmp_path, "bf16", E2E), tmp_path)
    assert ws.precision == "bf16" and ws.accelerator.device.type == "cuda"
    losses, model = train_steps(ws, end_to_end_model(ws, ws.text.lm))
    assert_learns(losses)
    params = dict(model.named_parameters())
    assert all(p.device.type == "cuda" for p in params.values())
    lora = {n: p for n, p in params.items() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    assert any(".lm." in n for n in lora), "LoRA must wrap the LM itself end to end"


def test_bf16_cached_steps_on_cuda(synth_dir, tmp_path):
    from distrec.train.stages.pipeline import new_model

    ws = workspace(
        run_config(synth_dir, tmp_path, "bf16", {"mode": "cached", **NO_DROPOUT}), tmp_path
    )
    losses, model = train_steps(ws, new_model(ws))
    assert_learns(losses)
    assert all(p.device.type == "cuda" for p in model.parameters())


def metrics_of(cfg: dict, out: Path, state: Path) -> dict:
    """Validation metrics on both domains of the model saved at `state` (this process's
    device); also what the CPU subprocess runs."""
    from distrec.train.evaluation import Evaluator
    from distrec.train.stages.pipeline import new_model

    ws = workspace(cfg, out)
    model = new_model(ws)
    model.load_state_dict(torch.load(state, map_location="cpu"))
    model = ws.accelerator.prepare(model)
    return {d: Evaluator(ws).metrics(model, [d], "valid") for d in ("tiny", "tiny-b")}


def cpu_metrics_main(cfg_path: str, out: str, state: str, result: str) -> None:
    """Entry point of the CPU subprocess (CUDA hidden): write metrics_of as JSON."""
    cfg = json.loads(Path(cfg_path).read_text())
    Path(result).write_text(json.dumps(metrics_of(cfg, Path(out), Path(state))))


def test_evaluation_on_cuda_equals_cpu(synth_dir, tmp_path):
    from distrec.train.stages.pipeline import new_model

    cfg = run_config(synth_dir, tmp_path / "gpu", "fp32", {"mode": "cached", **NO_DROPOUT})
    ws = workspace(cfg, tmp_path / "gpu")
    _, trained = train_steps(ws, new_model(ws))
    state = tmp_path / "model.pt"
    unwrapped = ws.accelerator.unwrap_model(trained)
    torch.save({k: v.cpu() for k, v in unwrapped.state_dict().items()}, state)
    torch.backends.cuda.matmul.allow_tf32 = False  # the CPU computes in true fp32
    on_gpu = metrics_of(cfg, tmp_path / "gpu", state)
    cpu_cfg = cfg | {"cache_dir": str(tmp_path / "cpu-features")}  # its own LM features
    (tmp_path / "cpu.json").write_text(json.dumps(cpu_cfg))
    code = (
        "import sys; from tests.train.test_gpu import cpu_metrics_main; "
        "cpu_metrics_main(*sys.argv[1:])"
    )
    args = [str(tmp_path / "cpu.json"), str(tmp_path / "cpu"), str(state), str(tmp_path / "m.json")]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [python(), "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    on_cpu = json.loads((tmp_path / "m.json").read_text())
    for domain, metrics in on_gpu.items():
        for key, value in metrics.items():
            if key.startswith(("ndcg", "recall", "hit", "mrr")):
                assert 0.0 <= value <= 1.0, (domain, key, value)
            assert value == pytest.approx(on_cpu[domain][key], abs=METRIC_TOL), (domain, key)


def zero3_config(synth_dir: Path, out: Path, strategy: str) -> dict:
    """One short pretraining stage, end-to-end LoRA on the LM, fp32, on `tiny` alone."""
    cfg = run_config(synth_dir, out, "fp32", E2E)
    cfg["data"].update(domains=[{"name": "tiny", "format": "prepared"}], target=None)
    cfg["stages"] = {
        "pretrain": {"epochs": 1},
        "zero_shot": False,
        "adapt": {"enabled": False},
        "baselines": [],
    }
    cfg["distributed"] = {"strategy": strategy}
    cfg["eval"] = {"batch_size": 64, "max_users": 64}
    return cfg


def launch_run(cfg: dict, cfg_file: Path, launcher: list[str]) -> dict:
    """Start `distrec.train` under `launcher`; its metrics.json."""
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("ACCELERATE_USE_CPU", None)
    proc = subprocess.run(
        [*launcher, "-m", "distrec.train", "--config", str(cfg_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads((Path(cfg["output"]["dir"]) / "metrics.json").read_text())


def test_zero3_in_one_process_matches_plain_training(synth_dir, tmp_path):
    plain = launch_run(
        zero3_config(synth_dir, tmp_path / "plain", "auto"), tmp_path / "p.yaml", [python()]
    )
    accelerate = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "launch" / "zero3.yaml"),
        "--num_processes", "1", "--main_process_port", "29671",
    ]  # fmt: skip
    sharded = launch_run(
        zero3_config(synth_dir, tmp_path / "zero3", "zero3"), tmp_path / "z.yaml", accelerate
    )
    assert sharded["strategy"] == "zero3" and sharded["world_size"] == 1
    got, want = sharded["stages"]["pretrain"], plain["stages"]["pretrain"]
    losses = [h["loss"] for h in got["history"]]
    assert losses and all(math.isfinite(x) for x in losses)
    assert losses == pytest.approx([h["loss"] for h in want["history"]], rel=1e-3)
    assert got["valid"]["ndcg@10"] == pytest.approx(want["valid"]["ndcg@10"], abs=METRIC_TOL)
