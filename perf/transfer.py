"""The transfer techniques' ablations on ML-1M -> ML-100K, over seeds, on one split.

    python perf/transfer.py train --runs runs/transfer [--seeds 3]
    python perf/transfer.py distill-again --runs runs/transfer [--seeds 3]
    python perf/transfer.py serving --runs runs/transfer [--repeats 10]
    python perf/transfer.py report --runs runs/transfer --baseline perf/results/heads/retrieval \
        --out perf/results/transfer

`train` runs every variant (perf/quality.py's launcher: 2 CPU processes, a seed that already
finished is skipped, so an interrupted measurement resumes):

- `adversarial`: configs/demo.yaml's pretraining and zero-shot with model.domain_adversarial;
- `unaligned`: the same without it (its zero-shot equals the demo's; its domain probe is the
  unaligned accuracy);
- `kg_distill`: configs/transfer/kg_distill.yaml, the demo with knowledge-graph fusion, whose
  adapted model then teaches an ID-only student (and the same student learns alone).

`distill-again` retrains only the distill stage of each kg_distill seed with other settings
(SETTINGS: T 1; alpha 3; both students on 30% of the users), into
runs/transfer/kd_<name>/. `serving` re-times each seed's teacher and students from their exports in one process,
interleaved, on a machine left alone (runs/transfer/serving.json; the in-run figures are
timed while the run's other rank works). `report` compares each with its paired run: adversarial vs unaligned zero-shot, KG-fused vs
the demo's adapted model (`--baseline`: perf/quality.py's seed runs of configs/demo.yaml,
the same seeds), and the student vs its teacher and vs itself alone. Every NDCG ratio has a
paired bootstrap 95% interval over users (each drawn user with all its seeds). Writes
<out>/transfer.json, transfer.md and transfer.png, and each seed's metrics.json,
config.yaml, report.md and ranks.parquet under <out>/<variant>/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from perf.common import write_result
from perf.heads import seeds_of
from perf.quality import train_seeds
from perf.transfer_report import markdown, plot
from perf.transfer_results import (
    alignment,
    distill_settings,
    distillation,
    keep_artefacts,
    knowledge_graph,
    serving_summary,
)

DEMO = "configs/demo.yaml"
ZERO_SHOT_ONLY = ["stages.adapt.enabled=false", "stages.baselines=[]"]
ADVERSARIAL = "model.domain_adversarial={weight: 1.0, on: item, schedule: dann}"
VARIANTS = {
    "adversarial": (DEMO, [ADVERSARIAL, *ZERO_SHOT_ONLY]),
    "unaligned": (DEMO, ZERO_SHOT_ONLY),
    "kg_distill": ("configs/transfer/kg_distill.yaml", []),
}
GOALS = {"student_share": 0.95, "params_share": 0.25, "speedup": 4.0, "probe": 0.60}


def serving(runs: Path, repeats: int) -> dict:
    """Re-time each kg_distill seed's teacher and students in one process, interleaved
    (`repeats` rounds), from their exports: the serving benchmark the report's speed-ups
    come from (the in-run figures are timed while the run's other ranks work)."""
    from distrec.train.inference import load_export, load_run
    from distrec.train.serving import serving_costs
    from distrec.train.stages.distill import load_weights, teacher_file

    run = runs / "kg_distill"
    found = {}
    for s in seeds_of(run):
        folder = run / f"seed-{s}"
        ws, _, target = load_run(folder, None)
        stages = json.loads((folder / "stages.json").read_text())
        teacher = stages["distill"]["teacher"]
        models = {
            "teacher": load_weights(ws, teacher_file(folder, target, stages[teacher], teacher)),
            "distill": load_export(ws, target, "distill"),
            "distill_alone": load_export(ws, target, "distill_alone"),
        }
        found[s] = serving_costs(ws, models, repeats)
    result = {"repeats": repeats, "processes": 1, "seeds": found}
    write_result(runs / "serving.json", result)
    return result


# Other distillation settings; `few` gives both students 30% of the target's users (the
# teacher was adapted on all of them), with its own student-alone control.
SETTINGS = {
    "t1": ["stages.distill.temperature=1.0", "stages.distill.control=false"],
    "a3": ["stages.distill.alpha=3.0", "stages.distill.control=false"],
    "few": ["stages.distill.train_fraction=0.3"],
}
KEEP_FOR_DISTILL = ("export", "adapters", "ranks", "config.yaml")


def distill_again(runs: Path, seeds: int) -> None:
    """Each SETTINGS entry's distill stage on each finished kg_distill seed: the run folder is
    copied without checkpoints and distill records and resumed, so only the distill stage
    trains (the same teacher export and seed)."""
    import os
    import subprocess

    from perf.quality import LAUNCH_ENV, LAUNCHER

    for name, overrides in SETTINGS.items():
        for s in range(seeds):
            src, dst = runs / "kg_distill" / f"seed-{s}", runs / f"kd_{name}" / f"seed-{s}"
            if (dst / "metrics.json").exists() or not (src / "metrics.json").exists():
                continue
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            for part in KEEP_FOR_DISTILL:
                copy = shutil.copytree if (src / part).is_dir() else shutil.copy2
                copy(src / part, dst / part)
            for stale in dst.glob("export/*-distill*"):
                shutil.rmtree(stale)
            stages = json.loads((src / "stages.json").read_text())
            kept = {k: v for k, v in stages.items() if not k.startswith("distill")}
            (dst / "stages.json").write_text(json.dumps(kept, indent=2))
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
            cmd += [str(LAUNCHER), "--num_processes", "2", "-m", "distrec.train"]
            cmd += ["--config", str(dst / "config.yaml"), "--resume", "auto"]
            cmd += [f"output.dir={dst}", *overrides]
            subprocess.run(cmd, env={**os.environ, **LAUNCH_ENV}, check=True)


def train(runs: Path, seeds: int) -> None:
    """Every variant's seeds (finished ones skipped)."""
    for name, (config, overrides) in VARIANTS.items():
        train_seeds(config, seeds, runs / name, overrides, processes=2)


def report(runs: Path, baseline: Path, out: Path, n_boot: int) -> dict:
    """Aggregate the variants' seeds (those every variant finished) into transfer.*."""
    found = [set(seeds_of(runs / v)) for v in VARIANTS] + [set(seeds_of(baseline))]
    seeds = sorted(set.intersection(*found))
    result = {
        "variants": {n: {"config": c, "overrides": o} for n, (c, o) in VARIANTS.items()},
        "baseline": str(baseline),
        "seeds": seeds,
        "goals": GOALS,
        "distillation": distillation(runs / "kg_distill", seeds, n_boot),
        "distill_settings": distill_settings(runs, seeds, n_boot),
        "serving_benchmark": serving_summary(json.loads(bench.read_text()))
        if (bench := runs / "serving.json").exists()
        else None,
        "alignment": alignment(runs / "adversarial", runs / "unaligned", seeds, n_boot),
        "knowledge_graph": knowledge_graph(runs / "kg_distill", baseline, seeds, n_boot),
        "bootstrap": {"n_boot": n_boot, "level": 0.95, "unit": "user, with all its seeds"},
    }
    for name in VARIANTS:
        keep_artefacts(runs / name, seeds, out / name)
    write_result(out / "transfer.json", result)
    (out / "transfer.md").write_text(markdown(result))
    plot(result, out / "transfer.png")
    return result


def main(argv: list[str] | None = None) -> int:
    """`train` the variants or `report` on them."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("command", choices=["train", "distill-again", "serving", "report"])
    p.add_argument("--runs", type=Path, default=Path("runs/transfer"), help="variant seed runs")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (train)")
    p.add_argument(
        "--baseline",
        type=Path,
        default=Path("perf/results/heads/retrieval"),
        help="seed runs of configs/demo.yaml with beyond-accuracy metrics (the without-KG rows)",
    )
    p.add_argument("--out", type=Path, default=Path("perf/results/transfer"), help="report folder")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--repeats", type=int, default=10, help="timing rounds (serving)")
    args = p.parse_args(argv)
    if args.command == "train":
        train(args.runs, args.seeds)
        return 0
    if args.command == "distill-again":
        distill_again(args.runs, args.seeds)
        return 0
    if args.command == "serving":
        serving(args.runs, args.repeats)
        return 0
    report(args.runs, args.baseline, args.out, args.n_boot)
    print((args.out / "transfer.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
