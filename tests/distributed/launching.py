"""Start real multi-process runs the way users do: `accelerate launch -m distrec.train`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import yaml

from perf.common import rank_pids
from tests.conftest import ROOT, python, tiny_run_config

# Backends must agree this closely (fp32) on losses and validation metrics.
TOL = 1e-4

# One template per backend; the run config is the same for all of them.
TEMPLATES = {
    "ddp": "launch/cpu_multiprocess.yaml",
    "zero2": "launch/cpu_zero2.yaml",
    "zero3": "launch/cpu_zero3.yaml",
}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def env_for(backend: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("ACCELERATE_USE_CPU", None)
    if backend == "ddp":  # the CPU DDP template needs it; DeepSpeed must not see it
        env["ACCELERATE_USE_CPU"] = "1"
    return env


def launch_cmd(backend: str, cfg_file: Path, port: int, *extra: str, **machines) -> list[str]:
    cmd = [
        python(),
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        TEMPLATES[backend],
        "--main_process_port",
        str(port),
    ]
    if machines:
        cmd += [
            "--num_machines",
            str(machines["num_machines"]),
            "--machine_rank",
            str(machines["machine_rank"]),
            "--main_process_ip",
            "127.0.0.1",
            "--num_processes",
            str(machines["num_processes"]),
        ]
    else:
        cmd += ["--num_processes", "2"]
    return [*cmd, "-m", "distrec.train", "--config", str(cfg_file), *extra]


def run_launch(backend: str, cfg_file: Path, port: int, *extra: str, timeout: int = 600):
    return subprocess.run(
        launch_cmd(backend, cfg_file, port, *extra),
        cwd=ROOT,
        env=env_for(backend),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_single(cfg_file: Path, *overrides: str, timeout: int = 600):
    return subprocess.run(
        [python(), "-m", "distrec.train", "--config", str(cfg_file), *overrides],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_launch(backend: str, cfg_file: Path, port: int) -> subprocess.Popen:
    """`run_launch` without waiting: the launcher process, its output piped."""
    return subprocess.Popen(
        launch_cmd(backend, cfg_file, port),
        cwd=ROOT,
        env=env_for(backend),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` until true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])


def rank_pid(cfg_file: Path, rank: int) -> int | None:
    """The pid of training rank `rank` of the run started with `cfg_file`."""
    return rank_pids("distrec.train", cfg_file).get(rank)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def parity_config(even_dir: Path, out: Path, **sections) -> dict:
    """The `even` domain alone, dropout off, fp32: every backend must reproduce it exactly."""
    cfg = tiny_run_config(even_dir, out, report_to=[])
    cfg["data"].update(
        domains=[{"name": "even", "format": "prepared"}],
        sources=["even"],
        target=None,
        num_workers=1,
        shuffle_shards=2,
    )
    cfg["model"].update(id_dropout=0.0, user_tower={"layers": 1, "heads": 2, "dropout": 0.0})
    cfg["stages"] = {
        "pretrain": {"epochs": 2},
        "zero_shot": False,
        "adapt": {"enabled": False},
        "baselines": [],
    }
    cfg["train"].update(batch_size=16, precision="fp32", early_stopping_patience=5)
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg
