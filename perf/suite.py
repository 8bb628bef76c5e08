"""`python -m perf` / `distrec bench`: run every benchmark side by side in one process (plus
the few that need their own processes) and write one JSON per benchmark, summary.json,
summary.md and PNG plots into --out."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf.common import ROOT, device_description, load_average, write_result
from perf.summary import SuiteResults, summarize, summary_markdown

SUITES = ("quick", "full")
# The throughput plot's label of each baseline (perf.baselines.hf_trainer.BASELINES names).
PLOT_LABELS = {"hf_trainer": "HF Trainer + PEFT", "hf_trainer_dedup": "HF Trainer + PEFT, dedup"}


class BenchError(Exception):
    """Bad input to the suite (exit 2 with the message)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The suite's command line."""
    p = argparse.ArgumentParser(prog="python -m perf", description=__doc__)
    add_arguments(p)
    return p.parse_args(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The suite's options (shared with `distrec bench`)."""
    p.add_argument("--suite", default="quick", help="quick (~1-2 min, tiny model) or full")
    p.add_argument("--out", default=None, help="results folder (default runs/bench-SUITE)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument(
        "--encoder",
        choices=["qwen2-1b"],
        default=None,
        help="full suite: a random-init Qwen2-shaped ~1.07B item encoder instead of MiniLM "
        "(meant for a GPU)",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["baseline", "eval", "data", "memory", "memory_zero", "scaling", "scale"],
        help="leave a benchmark out (recorded as skipped in summary.json); memory_zero: only "
        "the multi-process CPU ZeRO benchmark, per-mode peak memory is still measured",
    )
    p.add_argument("overrides", nargs="*", help="run-config overrides, e.g. data.prepared_dir=X")


def prepare_out(out: Path, overwrite: bool) -> Path:
    """Refuse to mix results: an existing folder with results needs --overwrite."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: exists and is not a folder")
    old = sorted(p.name for p in out.glob("*") if p.suffix in (".json", ".md", ".png"))
    if old and not overwrite:
        raise BenchError(
            f"--out {out}: already holds results ({', '.join(old[:4])}{'...' if len(old) > 4 else ''}); "
            f"pass --overwrite to replace them or choose another folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BenchError(f"--out {out}: cannot write there ({err.strerror})") from None
    for name in old:
        (out / name).unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 2 on bad input, 1 when a benchmark failed."""
    args = parse_args(argv)
    try:
        return run_suite(args)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run_suite(args: argparse.Namespace) -> int:
    """Every benchmark into --out, then summary.json and summary.md."""
    if args.suite not in SUITES:
        raise BenchError(f"--suite {args.suite!r}: expected one of {list(SUITES)}")
    if args.encoder and args.suite != "full":
        raise BenchError("--encoder applies to --suite full only")
    out = prepare_out(Path(args.out or ROOT / "runs" / f"bench-{args.suite}"), args.overwrite)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"distrec-bench-{args.suite}-") as tmp:
        summary = Suite(args, out, Path(tmp)).run()
    summary["wall_s"] = time.perf_counter() - start
    write_result(out / "summary.json", summary)
    (out / "summary.md").write_text(summary_markdown(summary))
    print(f"[perf] wrote {out}/summary.json, summary.md and plots ({summary['wall_s']:.0f}s)")
    for name, why in summary["failures"].items():
        print(f"error: {name} failed: {why}", file=sys.stderr)
    return 1 if summary["failures"] else 0


class Suite:
    """One suite run: its arguments, results and work folders, what was skipped or failed."""

    def __init__(self, args: argparse.Namespace, out: Path, work: Path) -> None:
        self.args, self.out, self.work = args, out, work
        self.skipped: dict[str, str] = {f"{s}": "--skip" for s in args.skip}
        self.files: list[str] = []
        self.failures: dict[str, str] = {}

    def save(self, name: str, result: dict) -> dict:
        """Write `result` as <name>.json (with machine facts) and return what was written."""
        path = write_result(self.out / f"{name}.json", result)
        self.files.append(path.name)
        return json.loads(path.read_text())

    def run(self) -> dict:
        """Every benchmark not skipped, in order; returns summary.json's content."""
        from perf.bench_peak import default_sizes, measure_peak
        from perf.plots import write_plots
        from perf.workloads import full_workload, quick_workload

        a = self.args
        load_start = load_average()
        self.workload = w = (
            quick_workload(self.work, a.overrides)
            if a.suite == "quick"
            else full_workload(self.work, a.overrides, a.encoder)
        )
        print(f"[perf] {a.suite} suite on {device_description()}, load {load_start}")
        peak = self.save("peak", measure_peak(default_sizes(), 1.0 if a.suite == "full" else 0.3))
        train, (cached_ws, cached_model), (e2e_ws, e2e_model) = self.training(peak)
        baselines: dict[str, dict] = {}
        equal = evaluation = None
        if "baseline" not in a.skip:
            baselines, equal = self.baseline(e2e_ws)
        if "eval" not in a.skip:
            from perf.bench_eval import bench_eval

            result = bench_eval(cached_ws, cached_model, e2e_ws, e2e_model, w.target)
            evaluation = self.save("eval", {**result, "config": w.describe()})
        data = self.data(e2e_ws) if "data" not in a.skip else None
        memory = self.memory(train, baselines) if "memory" not in a.skip else None
        scaling = self.scaling() if "scaling" not in a.skip else None
        if "scale" not in a.skip:
            self.cost_curves()
        results = SuiteResults(
            peak,
            train,
            baselines.get("hf_trainer"),
            equal,
            evaluation,
            data,
            memory,
            scaling,
            baseline_dedup=baselines.get("hf_trainer_dedup"),
        )
        summary = summarize(
            results, suite=a.suite, workload=w, skipped=self.skipped, load_start=load_start
        )
        summary["failures"] = self.failures
        plotted = {PLOT_LABELS[k]: v for k, v in baselines.items()}
        summary["plots"] = write_plots(self.out, train, plotted, data, scaling, memory)
        summary["files"] = [*self.files, "summary.json", "summary.md", *summary["plots"]]
        return summary

    def training(self, peak: dict):
        """Cached and end-to-end training throughput, one after the other on the same data;
        returns the results and both (workspace, model) pairs. The end-to-end workspace's
        LM stays pristine: every end-to-end model trains its own copy."""
        from distrec.train.stages.pipeline import new_model
        from perf.bench_train import bench_mode, end_to_end_model
        from perf.common import build_run
        from perf.workloads import with_mode

        w = self.workload
        domains = [w.source, *([w.target] if w.target != w.source else [])]
        peak_for = {k: v["flops_per_s"] for k, v in peak["measured"].items()}
        e2e_ws = build_run(w.config, self.work / "run", domains)
        cached_ws = build_run(with_mode(w.config, "cached"), self.work / "run", domains)
        cached_model = new_model(cached_ws)
        cached = bench_mode(
            cached_ws, cached_model, w.source, w.steps.cached, peak_for[cached_ws.precision], 0
        )
        e2e_model = end_to_end_model(e2e_ws, e2e_ws.text.lm)
        e2e = bench_mode(
            e2e_ws, e2e_model, w.source, w.steps.end_to_end, peak_for[e2e_ws.precision],
            w.steps.profile_steps,
        )  # fmt: skip
        result = {"benchmark": "train", "config": w.describe(), "cached": cached, "end_to_end": e2e}
        train = self.save("train", result)
        return train, (cached_ws, cached_model), (e2e_ws, e2e_model)

    def baseline(self, e2e_ws) -> tuple[dict[str, dict], dict]:
        """Both HF Trainer baselines (per example, then de-duplicated), each on a fresh
        end-to-end model, then the equal-loss check of both; ({name: result}, check)."""
        from perf.baselines.hf_trainer import BASELINES, bench_baseline
        from perf.bench_train import end_to_end_model, train_plan

        w = self.workload
        plan = train_plan(e2e_ws, w.source)
        baselines = {}
        for dedup, (name, _) in BASELINES.items():
            model = end_to_end_model(e2e_ws, e2e_ws.text.lm)
            result = bench_baseline(e2e_ws, model, plan, w.steps.baseline, self.work, dedup)
            benchmark = f"baseline_{name}"
            baselines[name] = self.save(
                benchmark, {"benchmark": benchmark, **result, "config": w.describe()}
            )
            del model  # one end-to-end copy of the LM at a time (GPU memory)
        # Its own process: the check runs in fp32, and accelerate's state keeps one precision
        # per process.
        eq_path = self.work / "equal_loss.json"
        self.subprocess(
            [
                sys.executable,
                "-m",
                "perf.baselines.hf_trainer",
                "--equal-loss",
                "--steps",
                str(w.steps.equal_loss_steps),
                "--out",
                str(eq_path),
            ],
            "equal-loss check",
        )
        equal = self.save("baseline_equal_loss", json.loads(eq_path.read_text()))
        return baselines, equal

    def data(self, e2e_ws) -> dict:
        """Loader-only throughput and per-batch deduplication on the source domain."""
        from distrec.data.tokens import AttachTokens
        from perf.bench_data import LoaderRun, dedup_ratios, loader_throughput

        w = self.workload
        d = e2e_ws.domains[w.source]
        pad_id = e2e_ws.text.tokenizer.pad_token_id
        rows = loader_throughput(
            w.source,
            d.manifest,
            AttachTokens(d.tokens, pad_id),
            LoaderRun(w.config.train.batch_size, w.steps.data_batches, w.config.data.max_history),
            workers=w.steps.data_workers,
        )
        dedup = dedup_ratios(
            d.manifest,
            d.tokens,
            pad_id,
            w.config.data.max_history,
            [w.config.train.batch_size, 64, 256],
            5,
        )
        return self.save(
            "bench_data",
            {
                "benchmark": "data_loader",
                "config": {
                    "batch_size": w.config.train.batch_size,
                    "batches": w.steps.data_batches,
                    "max_history": w.config.data.max_history,
                    "workers": list(w.steps.data_workers),
                    "run": w.describe(),
                },
                "results": rows,
                "dedup_by_batch_size": dedup,
            },
        )

    def memory(self, train: dict, baselines: dict[str, dict]) -> dict:
        """Peak memory per training mode (both baselines too), plus the ZeRO benchmark on the
        full suite."""
        per_mode = {
            "cached_train": train["cached"]["memory"],
            "end_to_end_train": train["end_to_end"]["memory"],
        }
        for name, result in baselines.items():
            per_mode[f"{name}_baseline_train"] = result["memory"]
        result = {
            "benchmark": "memory",
            "per_mode": per_mode,
            "zero": None,
            "config": self.workload.describe(),
        }
        script = ROOT / "perf" / "bench_memory.py"
        if not script.exists():
            self.skipped["memory_zero"] = (
                "perf/bench_memory.py (the ZeRO memory benchmark, issue 5) is not in this checkout"
            )
        elif "memory_zero" in self.args.skip:
            pass  # recorded as skipped from --skip already
        elif self.args.suite == "quick":
            self.skipped["memory_zero"] = (
                "quick suite: the ZeRO benchmark launches several processes; run --suite full"
            )
        else:
            path = self.work / "bench_memory.json"
            self.subprocess(
                [sys.executable, str(script), "--out", str(path)], "ZeRO memory benchmark"
            )
            result["zero"] = json.loads(path.read_text())
        return self.save("memory", result)

    def cost_curves(self) -> None:
        """perf/bench_scale.py's cost curves (full suite: ~1 h on 2 CPU cores) into scale/."""
        if self.args.suite == "quick":
            self.skipped["scale"] = (
                "quick suite: the cost curves train and evaluate up to 10^6-item catalogs and "
                "prepare up to 10^7 interactions; run --suite full or perf/bench_scale.py all"
            )
            return
        from perf.bench_scale import main as bench_scale

        bench_scale(["all", "--out", str(self.out / "scale"), "--work", str(self.work / "scale")])
        self.files += ["scale/scale.json", "scale/scale.md", "scale/scale.png"]

    def scaling(self) -> dict:
        """The scaling model's 7B table and its check against a 1-vs-2 process measurement."""
        from perf.scaling_model import Links, Workload, predict

        a = self.args
        if a.suite == "quick" and not os.environ.get("DISTREC_BENCH_SCALING"):
            self.skipped["scaling_measurement"] = (
                "quick suite: the 1-vs-2 process measurement launches 2 processes (~1 min); "
                "run --suite full (or set DISTREC_BENCH_SCALING=1)"
            )
            measured = None
        else:
            try:
                measured = self.scaling_measurement()
            except RuntimeError as err:
                # Everything else already measured stays; the suite exits non-zero.
                self.failures["scaling_measurement"] = str(err)[-2000:]
                measured = None
        from perf.scaling_model import qwen7b_workload, table

        seven_b = qwen7b_workload(32 * 18.4 * 14.5, 0.40, 989e12, 14.5)
        result = {
            "benchmark": "scaling",
            "measurement": measured,
            "validation": None,
            "table_7b_lora_h100": table(seven_b, Links(), overlap=0.0),
            "table_assumptions": "python -m perf.scaling_model defaults; see perf/SCALING.md",
            "config": self.workload.describe(),
        }
        if measured is not None:
            one, two = measured["1"], measured["2"]
            w = Workload(
                params=one["params"],
                trainable=one["trainable_params"],
                compute_s=one["step_s"],
                tokens_per_step=one["tokens_per_step_per_process"],
                layers=1,
            )
            links = Links(intra_gbps=two["allreduce"]["bus_gbps"], latency_us=0.0)
            pred = predict(w, "ddp", 2, 1, links, overlap=0.0)
            result["validation"] = {
                "prediction": pred,
                "measured_step_s": two["step_s"],
                "relative_error": (pred["step_s"] - two["step_s"]) / two["step_s"],
                "measured_compute_share": (two["step_s"] - pred["comm_s"]) / one["step_s"],
                "note": (
                    "compute part: a 2-process step should take the 1-process step time "
                    "(each process keeps its batch and gets its own core) plus the DDP "
                    "all-reduce at the measured gloo bandwidth, no overlap"
                ),
            }
            print(
                f"[perf] scaling: predicted 2-process step {pred['step_s']:.2f}s, "
                f"measured {two['step_s']:.2f}s"
            )
        return self.save("scaling", result)

    def scaling_measurement(self) -> dict | None:
        """`perf.bench_scaling` as 1 process and as 2 (DDP); None with a single GPU."""
        import torch

        a = self.args
        common = ["--suite", a.suite, "--work", str(self.work), *a.overrides]
        if torch.cuda.is_available():
            if torch.cuda.device_count() < 2:
                self.skipped["scaling_measurement"] = "one GPU: nothing to compare 1 process with"
                return None
            env, template = {}, ["--multi_gpu"]
        else:
            # One thread per process: each process plays one device (a core).
            env = {"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
            template = ["--config_file", str(ROOT / "launch" / "cpu_multiprocess.yaml")]
        one = self.work / "scaling-1.json"
        self.subprocess(
            [sys.executable, "-m", "perf.bench_scaling", *common, "--out", str(one)],
            "scaling: 1 process",
            env,
        )
        two = self.work / "scaling-2.json"
        launch = [
            sys.executable, "-m", "accelerate.commands.launch", *template,
            "--num_processes", "2", "--main_process_port", str(free_port()),
            "-m", "perf.bench_scaling",
        ]  # fmt: skip
        try:
            self.subprocess([*launch, *common, "--out", str(two)], "scaling: 2 processes", env)
        except RuntimeError as err:
            # A rank aborting at start-up under heavy machine load was seen once; one retry.
            print(f"[perf] scaling: 2-process launch failed, retrying once: {str(err)[:200]}")
            self.subprocess([*launch, *common, "--out", str(two)], "scaling: 2 processes", env)
        return {"1": json.loads(one.read_text()), "2": json.loads(two.read_text())}

    def subprocess(self, cmd: list[str], what: str, env: dict | None = None) -> None:
        """Run `cmd` from the checkout; RuntimeError with its output tail when it fails."""
        print(f"[perf] {what}: {' '.join(cmd[1:4])} ...")
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )


def free_port() -> int:
    """A TCP port free on this machine right now (for the 2-process launch)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
