"""Peak reference: measured dense matmul FLOP/s on this device (fp32, bf16), plus the vendor
peak where we know it, so MFU has a denominator on any machine.

    python -m perf.bench_peak --out /tmp/peak.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from perf.common import load_average, sync, write_result

# Dense (no sparsity) tensor-core peaks from the vendors' datasheets, FLOP/s (the datasheets
# print the 2:4-sparsity figure first: L4's "242 TFLOPS bf16" is 121 dense). fp32 is the
# non-tensor-core rate. A GPU not listed (A10G, H100 NVL, ...) gets no vendor peak: MFU is then
# stated against the peak measured in the same run only.
VENDOR_PEAKS = {
    "H100 SXM": {"bf16": 989e12, "fp32": 67e12, "tf32": 494e12},
    "H100 PCIe": {"bf16": 756e12, "fp32": 51e12, "tf32": 378e12},
    "H200": {"bf16": 989e12, "fp32": 67e12, "tf32": 494e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12, "tf32": 156e12},
    "L4": {"bf16": 121e12, "fp32": 30.3e12, "tf32": 60e12},
    "A10": {"bf16": 125e12, "fp32": 31.2e12, "tf32": 62.5e12},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def vendor_model(device_name: str) -> str | None:
    """The VENDOR_PEAKS key of a GPU name as torch reports it ('NVIDIA H100 80GB HBM3')."""
    words = device_name.upper().replace("-", " ").split()
    if "H200" in words:
        return "H200"
    if "H100" in words:
        if "NVL" in words:
            return None  # a different part (lower clocks); no datasheet entry here
        # torch names the SXM part '... HBM3' and the PCIe part '... PCIe'.
        return "H100 PCIe" if "PCIE" in words else "H100 SXM"
    # Whole words: 'A10' must match neither 'A100' nor AWS's 'A10G' (a different part).
    return next((key for key in ("A100", "L4", "A10") if key in words), None)


def vendor_peak(device_name: str | None) -> dict | None:
    """The datasheet entry for a GPU name as torch reports it; None when not listed."""
    key = vendor_model(device_name) if device_name else None
    return {"model": key, **VENDOR_PEAKS[key]} if key else None


def matmul_flops(n: int, dtype: torch.dtype, device: str, seconds: float) -> dict:
    """Median FLOP/s of n x n @ n x n over repeated runs lasting about `seconds`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    t0 = time.perf_counter()
    a @ b  # warm-up: kernel selection, page faults, oneDNN/cuBLAS init
    sync()
    first = time.perf_counter() - t0
    if first > seconds:
        # A slow kernel (bf16 on a CPU without AVX-512/AMX runs ~1 GFLOP/s): one call says
        # enough, and the repeats would take many minutes.
        return {"n": n, "reps": 1, "median_s": first, "flops_per_s": 2 * n**3 / first}
    a @ b
    sync()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"n": n, "reps": len(times), "median_s": t, "flops_per_s": 2 * n**3 / t}


def measure_peak(sizes: list[int], seconds: float = 1.0) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    per_dtype = {}
    for name, dtype in DTYPES.items():
        rows = []
        for n in sizes:
            rows.append(matmul_flops(n, dtype, device, seconds))
            if rows[-1]["reps"] == 1:  # already slow: a larger size would only be slower
                break
        best = max(rows, key=lambda r: r["flops_per_s"])
        per_dtype[name] = {"flops_per_s": best["flops_per_s"], "best_n": best["n"], "sizes": rows}
        print(f"[perf] peak {name}: {best['flops_per_s'] / 1e9:,.0f} GFLOP/s (n={best['n']})")
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {
        "benchmark": "peak",
        "config": {"sizes": sizes, "seconds_per_size": seconds, "device": device},
        "measured": per_dtype,
        "vendor": vendor_peak(gpu),
        "vendor_note": None
        if gpu
        else "no vendor peak is stated for CPUs; MFU uses the measured peak",
        "threads": torch.get_num_threads(),
        "load_average": load_average(),
    }


def default_sizes() -> list[int]:
    return [4096, 8192] if torch.cuda.is_available() else [1024, 2048]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m perf.bench_peak")
    p.add_argument("--out", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=None)
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    print(
        f"wrote {write_result(args.out, measure_peak(args.sizes or default_sizes(), args.seconds))}"
    )


if __name__ == "__main__":
    main()
