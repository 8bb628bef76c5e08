"""`distrec demo`: the main job on embedded defaults, end to end.

Fetch MovieLens, prepare both domains, train ML-1M -> ML-100K through
`accelerate launch` with the CPU multi-process template, print the stage table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from distrec.config import load_config
from distrec.data.prepare import prepare_domains
from distrec.train.preflight import preflight
from distrec.utils.progress import log

LAUNCHER = Path("launch/cpu_multiprocess.yaml")


def keep_previous_run(out: Path) -> None:
    """Never overwrite a finished demo silently: move it aside with a timestamp."""
    if (out / "metrics.json").exists():
        stamp = time.strftime(
            "%Y%m%d-%H%M%S", time.localtime((out / "metrics.json").stat().st_mtime)
        )
        kept = out.with_name(f"{out.name}-{stamp}")
        out.rename(kept)
        log(f"previous run kept as {kept}")


def run_demo(config: str, overrides: list[str], processes: int = 2) -> int:
    """Prepare the domains, train through `accelerate launch` on `processes` CPU processes
    and print the report's stage table; returns the exit code (training's, if it failed)."""
    cfg = load_config(config, overrides)
    preflight(cfg)
    prepare_domains(cfg)
    out = Path(cfg.output.dir)
    keep_previous_run(out)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(LAUNCHER),
        "--num_processes",
        str(processes),
        "-m",
        "distrec.train",
        "--config",
        config,
        *overrides,
    ]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    log("launching: " + " ".join(cmd[2:]))
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        print(f"demo: training exited with {code}", file=sys.stderr)
        return code
    report = (out / "report.md").read_text()
    print("\n" + report.split("\n\nPretraining")[0])
    print(
        f"\nfull report: {out / 'report.md'}  plot: {out / 'report.png'}  metrics: {out / 'metrics.json'}"
    )
    return 0
