"""The 1-vs-2 process measurement that validates the compute part of `perf.scaling_model`.

Each process trains the suite's end-to-end workload with distrec's trainer step (one thread
per process on CPU, so a process plays one device) and rank 0 writes its step time, the
trainable/total parameter counts and a measured all-reduce bandwidth. The suite runs it once
as a single process and once under `accelerate launch` with 2 processes (DDP over gloo).

    python -m perf.bench_scaling --suite quick --work DIR --out one.json
    ACCELERATE_USE_CPU=1 accelerate launch --config_file launch/cpu_multiprocess.yaml \\
        -m perf.bench_scaling --suite quick --work DIR --out two.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from perf.common import load_average, write_result


def allreduce_bus_gbps(numel: int, reps: int = 5) -> dict | None:
    """Ring all-reduce bus bandwidth (NCCL convention) of a gradient-sized fp32 buffer."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return None
    world = dist.get_world_size()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    buf = torch.ones(numel, device=device)
    dist.all_reduce(buf)
    times = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    size = numel * 4
    return {"bytes": size, "seconds": t, "bus_gbps": 2 * (world - 1) / world * size / t / 1e9}


def main(argv: list[str] | None = None) -> None:
    """One process's end-to-end step time, parameter counts and all-reduce bandwidth."""
    from perf.bench_train import BenchSteps, end_to_end_model, time_training, train_plan
    from perf.common import build_run
    from perf.workloads import full_workload, quick_workload

    p = argparse.ArgumentParser(prog="python -m perf.bench_scaling")
    p.add_argument("--suite", choices=["quick", "full"], required=True)
    p.add_argument("--work", required=True, help="the suite's work folder (data, encoders)")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=4, help="per process")
    p.add_argument("--steps", type=int, nargs=3, default=[1, 2, 2], metavar=("WARM", "WIN", "PER"))
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    extra = [f"train.batch_size={args.batch_size}", "data.num_workers=0", *args.overrides]
    w = quick_workload(work, extra) if args.suite == "quick" else full_workload(work, extra, None)
    ws = build_run(w.config, work / "scaling-run", [w.source])
    model = end_to_end_model(ws, ws.text.lm)
    rank, world = ws.rank_world
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    steps = BenchSteps(*args.steps)
    result = time_training(ws, model, train_plan(ws, w.source), steps, 1.0)
    allreduce = allreduce_bus_gbps(trainable)
    if rank == 0:
        m = result["median"]
        write_result(
            args.out,
            {
                "benchmark": "scaling_measurement",
                "world_size": world,
                "threads_per_process": torch.get_num_threads(),
                "batch_size_per_process": args.batch_size,
                "step_s": 1.0 / m["steps_per_s"],
                "users_per_s": m["users_per_s"] * world,  # every rank trains its own shard
                "tokens_per_step_per_process": result["per_step_mean"]["tokens"],
                "params": total,
                "trainable_params": trainable,
                "allreduce": allreduce,
                "train": result,
                "config": w.describe(),
                "load_average": load_average(),
            },
        )
    ws.accelerator.end_training()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
