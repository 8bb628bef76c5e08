"""Scaling on paper: step time and tokens/s of data-parallel training on N GPUs x M nodes.

step = compute + comm - overlap * min(compute, comm)

- compute: the single-device step time, measured (or analytic FLOPs / (peak x MFU)). Data
  parallelism keeps the per-device batch, so per-device compute does not change with N x M
  (weak scaling; no straggler or input-pipeline effects).
- comm: the collectives each backend issues per step, ring algorithm, NCCL "bus bandwidth"
  convention (all-reduce moves 2(W-1)/W x S bytes per rank, all-gather and reduce-scatter
  (W-1)/W x S), at the intra-node bandwidth on one node and at the per-GPU inter-node
  bandwidth across nodes (the slower link bounds a ring), plus a latency per ring hop.
    DDP    all-reduce of the trainable gradients.
    ZeRO-2 reduce-scatter of the trainable gradients + all-gather of the updated trainable
           parameters (same volume as DDP, state sharded).
    ZeRO-3 all-gather of every parameter in forward and again in backward (frozen LoRA base
           weights are partitioned too, so they travel every step) + reduce-scatter of the
           trainable gradients.
- overlap: the share of the shorter of (compute, comm) hidden behind the other
  (0 = serial, 1 = perfect prefetch/bucketing).

    python -m perf.scaling_model --table            # the 7B LoRA table in SCALING.md
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass

BACKENDS = ("ddp", "zero2", "zero3")


@dataclass(frozen=True)
class Links:
    intra_gbps: float = 360.0  # GB/s bus bandwidth per GPU inside a node (H100 NVLink4, NCCL)
    inter_gbps: float = 50.0  # GB/s per GPU across nodes (8 x 400 Gb/s InfiniBand per node)
    latency_us: float = 10.0  # per ring hop


@dataclass(frozen=True)
class Workload:
    params: float  # every parameter (ZeRO-3 gathers them all)
    trainable: float  # parameters that get gradients (LoRA + heads)
    compute_s: float  # measured single-device step time
    tokens_per_step: float  # per device
    weight_bytes: int = 2  # bf16 weights on the wire
    grad_bytes: int = 4  # fp32 gradients (trainable params kept in fp32 under autocast)
    layers: int = 28  # ZeRO-3 gathers layer by layer: one collective per layer and pass
    bucket_bytes: float = 25e6  # DDP / ZeRO gradient bucket


def ring_time(bytes_: float, world: int, factor: float, gbps: float, hops: int, lat_us: float):
    if world <= 1:
        return 0.0
    return factor * (world - 1) / world * bytes_ / (gbps * 1e9) + hops * (world - 1) * lat_us / 1e6


def comm_seconds(w: Workload, backend: str, gpus: int, nodes: int, links: Links) -> dict:
    world = gpus * nodes
    gbps = links.intra_gbps if nodes == 1 else min(links.intra_gbps, links.inter_gbps)
    grads = w.trainable * w.grad_bytes
    buckets = max(1, math.ceil(grads / w.bucket_bytes))
    if backend == "ddp":
        volume = {
            "all_reduce_grads": ring_time(grads, world, 2, gbps, 2 * buckets, links.latency_us)
        }
    elif backend == "zero2":
        volume = {
            "reduce_scatter_grads": ring_time(grads, world, 1, gbps, buckets, links.latency_us),
            "all_gather_params": ring_time(
                w.trainable * w.weight_bytes, world, 1, gbps, buckets, links.latency_us
            ),
        }
    elif backend == "zero3":
        weights = w.params * w.weight_bytes
        volume = {
            "all_gather_forward": ring_time(weights, world, 1, gbps, w.layers, links.latency_us),
            "all_gather_backward": ring_time(weights, world, 1, gbps, w.layers, links.latency_us),
            "reduce_scatter_grads": ring_time(grads, world, 1, gbps, buckets, links.latency_us),
        }
    else:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    return volume


def bytes_per_step(w: Workload, backend: str) -> float:
    """Bytes each rank sends per step in the W -> infinity limit (the volume the ring moves)."""
    grads, weights = w.trainable * w.grad_bytes, w.params * w.weight_bytes
    return {
        "ddp": 2 * grads,
        "zero2": grads + w.trainable * w.weight_bytes,
        "zero3": 2 * weights + grads,
    }[backend]


def predict(
    w: Workload, backend: str, gpus: int, nodes: int, links: Links, overlap: float = 0.0
) -> dict:
    parts = comm_seconds(w, backend, gpus, nodes, links)
    comm = sum(parts.values())
    step = w.compute_s + comm - overlap * min(w.compute_s, comm)
    world = gpus * nodes
    return {
        "backend": backend,
        "gpus_per_node": gpus,
        "nodes": nodes,
        "world": world,
        "compute_s": w.compute_s,
        "comm_s": comm,
        "comm_parts_s": parts,
        "step_s": step,
        "tokens_per_s": world * w.tokens_per_step / step,
        # Frozen base weights held per GPU (activations and optimizer state not included).
        "weights_gb_per_gpu": w.params
        * w.weight_bytes
        / (world if backend == "zero3" else 1)
        / 1e9,
        "scaling_efficiency": w.compute_s / step,
    }


def layouts(max_gpus: int = 64, per_node: int = 8) -> list[tuple[int, int]]:
    """1, 2, 4, 8 GPUs on one node, then whole nodes up to `max_gpus`."""
    out = [(g, 1) for g in (1, 2, 4, 8) if g <= min(per_node, max_gpus)]
    nodes = 2
    while nodes * per_node <= max_gpus:
        out.append((per_node, nodes))
        nodes *= 2
    return out


# Qwen2.5-7B as distrec's item encoder with LoRA r=16 on q,k,v,o,gate,up,down
# (configs/qwen2.5-7b_zero3.yaml): AutoModel without the LM head.
QWEN25_7B = {
    "params": 7.07e9,
    "matmul_weights": 6.53e9,
    "layers": 28,
    "hidden": 3584,
    "lora_params": 40.4e6,
    "head_params": 3.0e6,
}


def qwen7b_workload(tokens_per_step: float, mfu: float, peak: float, seq: float) -> Workload:
    """Compute time from analytic LoRA training FLOPs (perf.flops conventions) at an MFU."""
    q = QWEN25_7B
    flops_per_token = (
        4 * q["matmul_weights"] + 6 * q["lora_params"] + 12 * q["layers"] * q["hidden"] * seq
    )
    compute = tokens_per_step * flops_per_token / (peak * mfu)
    return Workload(
        params=q["params"],
        trainable=q["lora_params"] + q["head_params"],
        compute_s=compute,
        tokens_per_step=tokens_per_step,
        layers=q["layers"],
    )


def table(w: Workload, links: Links, overlap: float, max_gpus: int = 64) -> list[dict]:
    return [predict(w, b, g, n, links, overlap) for g, n in layouts(max_gpus) for b in BACKENDS]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| GPUs (per node x nodes) | backend | compute s | comm s | step s | tokens/s | efficiency "
        "| weights GB/GPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['world']} ({r['gpus_per_node']}x{r['nodes']}) | {r['backend']} | "
            f"{r['compute_s']:.3f} | {r['comm_s']:.3f} | {r['step_s']:.3f} | "
            f"{r['tokens_per_s']:,.0f} | {r['scaling_efficiency']:.0%} | "
            f"{r['weights_gb_per_gpu']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m perf.scaling_model")
    p.add_argument(
        "--tokens-per-step",
        type=float,
        default=32 * 18.4 * 14.5,
        help="LM tokens per GPU per step (default: batch 32 users x 18.4 distinct "
        "items per user x 14.5 tokens per item, as measured on ML-1M)",
    )
    p.add_argument("--seq", type=float, default=14.5, help="mean tokens per item text")
    p.add_argument("--mfu", type=float, default=0.40, help="assumed single-GPU MFU")
    p.add_argument("--peak", type=float, default=989e12, help="FLOP/s (H100 SXM bf16 dense)")
    p.add_argument("--intra-gbps", type=float, default=Links.intra_gbps)
    p.add_argument("--inter-gbps", type=float, default=Links.inter_gbps)
    p.add_argument("--latency-us", type=float, default=Links.latency_us)
    p.add_argument("--overlap", type=float, default=0.0)
    p.add_argument("--max-gpus", type=int, default=64)
    args = p.parse_args(argv)
    w = qwen7b_workload(args.tokens_per_step, args.mfu, args.peak, args.seq)
    links = Links(args.intra_gbps, args.inter_gbps, args.latency_us)
    print(f"workload: {asdict(w)}")
    print(f"links: {asdict(links)}, overlap {args.overlap}")
    print(markdown(table(w, links, args.overlap, args.max_gpus)))


if __name__ == "__main__":
    main()
