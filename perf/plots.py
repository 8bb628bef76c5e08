"""The suite's PNGs: throughput side by side, where the end-to-end step goes, loader rates,
peak memory per mode and the scaling model's prediction."""

from __future__ import annotations

from pathlib import Path

from distrec.utils.plotting import pyplot, save_figure


def write_plots(out: Path, train, baselines: dict[str, dict], data, scaling, memory) -> list[str]:
    """Every plot the suite's results allow; `baselines`: {plot label: baseline result}."""
    names = [throughput(out / "throughput.png", train, baselines)]
    if "profile" in train["end_to_end"]:
        names.append(step_profile(out / "e2e_step_profile.png", train["end_to_end"]))
    if data is not None:
        from perf.bench_data import plot

        plot(out / "bench_data.png", data["results"])
        names.append("bench_data.png")
    if memory is not None:
        names.append(memory_plot(out / "memory.png", memory))
    if scaling is not None and scaling.get("table_7b_lora_h100"):
        names.append(scaling_plot(out / "scaling.png", scaling["table_7b_lora_h100"]))
    return names


def throughput(path: Path, train, baselines: dict[str, dict]) -> str:
    """Users/s of both distrec modes and of every baseline, side by side (log scale)."""
    plt = pyplot()
    labels = ["cached", "end-to-end LoRA", *baselines]
    values = [
        train["cached"]["median"]["users_per_s"],
        train["end_to_end"]["median"]["users_per_s"],
        *(b["median"]["users_per_s"] for b in baselines.values()),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = ["#4c72b0", "#dd8452", "#8c8c8c", "#b0b0b0", "#555555"]
    bars = ax.bar(labels, values, color=colors[: len(values)])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_yscale("log")
    ax.bar_label(bars, labels=[f"{v:,.1f}" for v in values])
    ax.set(ylabel="users / s (log)", title="training throughput, same model and batch")
    return save_figure(fig, path)


def step_profile(path: Path, e2e: dict) -> str:
    plt = pyplot()
    shares = e2e["profile"]["shares"]
    fig, ax = plt.subplots(figsize=(8.5, 3.5))
    keys = sorted(shares, key=shares.get)
    ax.barh(keys, [shares[k] for k in keys], color="#4c72b0")
    ax.set(
        xlabel="share of profiled step time",
        title=f"end-to-end LoRA step: MFU {e2e['median']['mfu']:.1%}",
    )
    ax.tick_params(axis="y", labelsize=7)
    return save_figure(fig, path)


def memory_plot(path: Path, memory: dict) -> str:
    plt = pyplot()
    per = memory["per_mode"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(per), [v["peak_bytes"] / 2**30 for v in per.values()], color="#55a868")
    ax.set(ylabel=f"GiB ({next(iter(per.values()))['kind']})", title="peak memory per mode")
    ax.tick_params(axis="x", labelsize=7)
    return save_figure(fig, path)


def scaling_plot(path: Path, rows: list[dict]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for backend in ("ddp", "zero2", "zero3"):
        sel = [r for r in rows if r["backend"] == backend]
        ax.plot(
            [r["world"] for r in sel], [r["tokens_per_s"] for r in sel], marker="o", label=backend
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="H100 GPUs (8 per node beyond 8)",
        ylabel="predicted LM tokens / s",
        title="7B item encoder, LoRA: scaling model",
    )
    ax.legend()
    return save_figure(fig, path)
