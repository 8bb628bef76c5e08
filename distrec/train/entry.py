"""`distrec train` / `accelerate launch -m distrec.train`: parse, build, run the stages, report.

Always closes trackers and the process group, on success and on failure.
"""

from __future__ import annotations

import os
import sys
import time

from distrec.config import check_environment, load_config


def run_training(
    config: str, overrides: list[str] | None = None, resume: str | None = None, on_epoch=None
) -> int:
    """Run every enabled stage; `on_epoch(stage, history_entry, last)` is called after each
    epoch's checkpoint (how `distrec tune` reports to Ray). Returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = load_config(config, overrides)
    check_environment(cfg)
    if cfg.train.threads is not None:
        import torch

        torch.set_num_threads(cfg.train.threads)

    from distrec.distributed.accelerator import build_accelerator, live_strategy
    from distrec.train.checkpoint import Preempted, install_preemption_handler
    from distrec.train.context import Run, load_domains, prepare_output_dir
    from distrec.train.outputs import write_metrics, write_report
    from distrec.train.stages import run_stages
    from distrec.utils.progress import log

    start = time.perf_counter()
    accelerator, precision = build_accelerator(
        cfg, log_dir=cfg.output.dir if cfg.output.tensorboard else None
    )
    try:
        out = prepare_output_dir(cfg, resume is not None)
        if cfg.output.tensorboard:
            accelerator.init_trackers("events")
        run = Run(cfg, accelerator, precision, out, resume=resume is not None, on_epoch=on_epoch)
        install_preemption_handler()
        names = [*cfg.data.sources, *([cfg.data.target] if cfg.data.target else [])]
        load_domains(run, names)
        log(
            f"training with {run.rank_world[1]} process(es), strategy {live_strategy(accelerator)}, "
            f"precision {precision}"
        )
        stages = run_stages(run)
        wait_s = sum(s.get("data_wait_s", 0.0) for s in stages.values())
        train_s = sum(s.get("train_s", 0.0) for s in stages.values())
        extra = {
            "precision": precision,
            "world_size": run.rank_world[1],
            "strategy": live_strategy(accelerator),
            "wall_s": time.perf_counter() - start,
            # time-weighted over every training stage: the share of step time spent waiting
            "data_wait_fraction": wait_s / train_s if train_s else 0.0,
        }
        if run.is_main:
            write_metrics(out, cfg, stages, extra)
            write_report(out, cfg, stages, extra)
            log(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'report.png'}")
        return 0
    except Preempted as err:
        log(str(err))
        return 143
    except Exception as err:
        from distrec.distributed.env import is_peer_failure, peer_failure_message

        if not is_peer_failure(err):
            raise
        # Every rank says it (not only rank 0): the survivors are the ones that can.
        print(
            f"[distrec] error: {peer_failure_message(err, cfg.distributed.timeout_s)}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        accelerator.end_training()
        _destroy_process_group()


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
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
