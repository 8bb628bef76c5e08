"""`distrec train` / `accelerate launch -m distrec.train`: parse, build, run the stages, report.

Always closes trackers and the process group, on success and on failure.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from distrec.config import RunConfig, load_config


def run_training(
    config: str, overrides: list[str] | None = None, resume: str | None = None, hooks: Sequence = ()
) -> int:
    """Run every planned stage; `hooks` (distrec.train.trainer.TrainHook) join every stage's
    Trainer (how `distrec tune` reports to Ray). Returns the exit code."""
    start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = load_config(config, overrides)
    check_run(cfg)
    if cfg.train.threads is not None:
        import torch

        torch.set_num_threads(cfg.train.threads)

    from distrec.distributed.accelerator import build_accelerator
    from distrec.distributed.collectives import destroy_process_group
    from distrec.train.checkpoint import Preempted
    from distrec.train.trackers import build_trackers

    accelerator, precision = build_accelerator(cfg, trackers=build_trackers(cfg))
    try:
        return train_and_report(cfg, accelerator, precision, resume is not None, hooks, start)
    except Preempted as err:
        from distrec.utils.progress import log

        log(str(err))
        return 143
    except Exception as err:
        return report_peer_failure(err, cfg)
    finally:
        accelerator.end_training()
        destroy_process_group()


def check_run(cfg: RunConfig) -> None:
    """Everything checkable before a process group exists: files, launcher, registered names."""
    from distrec.train.preflight import preflight

    preflight(cfg)


def train_and_report(
    cfg: RunConfig, accelerator, precision: str, resume: bool, hooks, start: float
) -> int:
    """Build the workspace, run the stages, write metrics.json / report.md / report.png
    (`start`: when the command started, for wall_s)."""
    from distrec.distributed.accelerator import live_strategy
    from distrec.train.checkpoint import install_preemption_handler
    from distrec.train.outputs import write_metrics, write_report
    from distrec.train.stages.runner import run_stages
    from distrec.train.trackers import start_trackers
    from distrec.train.workspace import Workspace, prepare_output_dir
    from distrec.utils.progress import log

    out = prepare_output_dir(cfg, resume)
    start_trackers(accelerator, cfg)
    install_preemption_handler()
    ws = Workspace.open(cfg, accelerator, precision, out=out, resume=resume)
    strategy = live_strategy(accelerator)
    log(f"training with {ws.rank_world[1]} process(es), strategy {strategy}, precision {precision}")
    stages = run_stages(ws, hooks)
    wait_s = sum(s.get("data_wait_s", 0.0) for s in stages.values())
    train_s = sum(s.get("train_s", 0.0) for s in stages.values())
    extra = {
        "precision": precision,
        "world_size": ws.rank_world[1],
        "strategy": strategy,
        "wall_s": time.perf_counter() - start,
        # time-weighted over every training stage: the share of step time spent waiting
        "data_wait_fraction": wait_s / train_s if train_s else 0.0,
    }
    if ws.is_main:
        write_metrics(out, cfg, stages, extra)
        write_report(out, cfg, stages, extra)
        log(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'report.png'}")
    return 0


def report_peer_failure(err: Exception, cfg: RunConfig) -> int:
    """A collective failed because another rank died: say so on every rank (the survivors
    are the ones that can) and exit 1; any other error propagates."""
    from distrec.distributed.env import is_peer_failure, peer_failure_message

    if not is_peer_failure(err):
        raise err
    print(
        f"[distrec] error: {peer_failure_message(err, cfg.distributed.timeout_s)}",
        file=sys.stderr,
        flush=True,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m distrec.train --config FILE [--resume auto] [key=value ...]`; returns the
    exit code (2 for an invalid config)."""
    import argparse

    from distrec.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m distrec.train")
    p.add_argument("--config", required=True)
    p.add_argument("--resume", choices=["auto"], default=None)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        return run_training(args.config, args.overrides, args.resume)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
