"""Per-rank training-state memory under DDP, ZeRO-2 and ZeRO-3: 2 ranks, full fine-tuning
of a >=100M-parameter random-init Qwen2-shaped decoder, fp32, AdamW.

Each backend runs through its `launch/` template (`accelerate launch`, 2 processes)
and distrec's own `build_accelerator`, takes two optimizer steps, and measures on
every rank, right after the last optimizer step (gradients still alive, activations
freed), how much the process's resident memory grew since just before the model
was built: parameters or their shards, gradients, DDP buckets, DeepSpeed's flat
buffers and partitions, optimizer state. What the training state really occupies,
including buffers owned by C++ that no Python object shows, not a formula. glibc is
told to serve every allocation above 64 KiB by mmap (MALLOC_MMAP_THRESHOLD_), so
freed activations go back to the OS and do not count. The bytes of the tensors
Python can see are reported beside it as a cross-check, and peak RSS per rank.

    python perf/bench_memory.py --out perf/results/bench_memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from distrec.utils.plotting import pyplot, save_figure

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = {
    "ddp": "launch/cpu_multiprocess.yaml",
    "zero2": "launch/cpu_zero2.yaml",
    "zero3": "launch/cpu_zero3.yaml",
}
MODEL = {  # Qwen2 layout: GQA attention, SwiGLU MLP, untied head
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage alive in this process."""
    import torch

    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.device.type == "meta":
                continue
            storage = obj.untyped_storage()
        except (RuntimeError, ReferenceError):
            continue
        if storage.nbytes():
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(strategy: str, result_dir: Path, steps: int, batch: int, seq: int) -> None:
    """One rank: build the accelerator the way `distrec train` does, train, measure."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from distrec.config.schema import RunConfig
    from distrec.distributed.accelerator import build_accelerator, live_strategy
    from distrec.distributed.env import rank_and_world

    cfg = RunConfig.model_validate(
        {
            "train": {
                "batch_size": batch,
                "precision": "fp32",
                "max_grad_norm": 1.0,
                "report_to": [],
            },
            "distributed": {"strategy": strategy},
        }
    )
    accelerator, _ = build_accelerator(cfg)
    gc.collect()
    baseline = resident_bytes()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**MODEL))
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        ids = torch.randint(0, MODEL["vocab_size"], (batch, seq), generator=gen)
        loss = model(input_ids=ids.to(accelerator.device), labels=ids.to(accelerator.device)).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step == steps - 1:  # the steady state: weights, gradients, optimizer state
            del ids, loss
            gc.collect()
            state_bytes = resident_bytes() - baseline
            visible = live_tensor_bytes()
        optimizer.zero_grad()
    rank, world = rank_and_world()
    record = {
        "rank": rank,
        "world_size": world,
        "strategy": live_strategy(accelerator),
        "params": params,
        "state_bytes": state_bytes,
        "python_visible_tensor_bytes": visible,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    (result_dir / f"{strategy}-rank{rank}.json").write_text(json.dumps(record))
    accelerator.end_training()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def launch(strategy: str, result_dir: Path, args, port: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="65536")
    env.pop("ACCELERATE_USE_CPU", None)
    if strategy == "ddp":
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        TEMPLATES[strategy],
        "--num_processes",
        "2",
        "--main_process_port",
        str(port),
        str(Path(__file__).resolve()),
        "--worker",
        strategy,
        "--result-dir",
        str(result_dir),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
    ]
    print(f"[bench_memory] {strategy}: 2 ranks via {TEMPLATES[strategy]}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{strategy} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def summarize(result_dir: Path) -> dict:
    records = [json.loads(p.read_text()) for p in sorted(result_dir.glob("*.json"))]
    by = {s: [r for r in records if r["strategy"] == s] for s in TEMPLATES}
    state = {s: max(r["state_bytes"] for r in rs) for s, rs in by.items()}
    rss = {s: max(r["peak_rss_bytes"] for r in rs) for s, rs in by.items()}
    params = records[0]["params"]
    return {
        "params": params,
        "world_size": records[0]["world_size"],
        "per_rank_state_bytes": state,
        "per_rank_peak_rss_bytes": rss,
        "per_rank_state_bytes_per_param": {s: round(b / params, 2) for s, b in state.items()},
        "ratios": {
            "zero3_over_ddp": state["zero3"] / state["ddp"],
            "zero2_over_ddp": state["zero2"] / state["ddp"],
        },
        "targets": {
            "zero3_le_0.6_ddp": state["zero3"] <= 0.6 * state["ddp"],
            "zero2_below_ddp": state["zero2"] < state["ddp"],
        },
        "per_rank": records,
        "method": (
            "resident-memory growth per rank from just before the model is built to just after "
            "the last optimizer step (before zero_grad), glibc mmap threshold pinned at 64 KiB "
            "so freed activations are returned to the OS; max over ranks"
        ),
    }


def plot(summary: dict, path: Path) -> None:
    plt = pyplot()

    names = list(TEMPLATES)
    gib = 1024**3
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(names))
    ax.bar(
        [i - 0.2 for i in x],
        [summary["per_rank_state_bytes"][n] / gib for n in names],
        0.4,
        label="training state",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [summary["per_rank_peak_rss_bytes"][n] / gib for n in names],
        0.4,
        label="peak RSS",
    )
    ax.set_xticks(list(x), names)
    ax.set_ylabel("GiB per rank")
    ax.set_title(f"{summary['params'] / 1e6:.0f}M params, 2 ranks, fp32 AdamW")
    ax.legend()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="result JSON (a PNG is written beside it)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--port", type=int, default=29681)
    p.add_argument("--worker", choices=list(TEMPLATES), help=argparse.SUPPRESS)
    p.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.result_dir), args.steps, args.batch, args.seq)
        return 0
    if not args.out:
        p.error("--out FILE is required")
    sys.path.insert(0, str(ROOT))
    from perf.common import write_result

    with tempfile.TemporaryDirectory() as tmp:
        for i, strategy in enumerate(TEMPLATES):
            launch(strategy, Path(tmp), args, args.port + i)
        summary = summarize(Path(tmp))
    summary["config"] = {"model": MODEL, "steps": args.steps, "batch": args.batch, "seq": args.seq}
    out = write_result(args.out, summary)
    plot(summary, out.with_suffix(".png"))
    gib = 1024**3
    for s in TEMPLATES:
        print(
            f"[bench_memory] {s:6s} state {summary['per_rank_state_bytes'][s] / gib:6.2f} GiB/rank  "
            f"peak RSS {summary['per_rank_peak_rss_bytes'][s] / gib:6.2f} GiB/rank"
        )
    print(f"[bench_memory] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
