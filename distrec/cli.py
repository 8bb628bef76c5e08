"""The `distrec` command line: parse, then hand off to the package; heavy imports are lazy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distrec.config import ConfigError


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="run config YAML (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")


def _cmd_config_validate(args: argparse.Namespace) -> int:
    from distrec.config import load_config
    from distrec.train.preflight import preflight

    cfg = load_config(args.file, args.overrides)
    for note in preflight(cfg):
        print(f"note: {note}")
    print(f"{args.file}: ok")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from distrec.config import dump_config, load_config

    print(dump_config(load_config(args.file, args.overrides)), end="")
    return 0


def _cmd_config_docs(args: argparse.Namespace) -> int:
    from distrec.config.docs import config_reference

    text = config_reference()
    if args.out is None:
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    from pathlib import Path

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Generated text: overwriting a stale copy is the point.
    out.write_text(text if text.endswith("\n") else text + "\n")
    print(f"wrote the config reference ({len(text.splitlines())} lines) to {out}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from distrec.data.fetch import fetch_movielens

    out = fetch_movielens(args.out, force=args.force)
    print(f"MovieLens ready in {out}")
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from distrec.config import load_data_config
    from distrec.train.preflight import preflight_data
    from distrec.utils.memory import peak_rss_mib

    # Only the data section: a single-domain user prepares data before the stages fit.
    cfg = load_data_config(args.config, args.overrides)
    preflight_data(cfg)
    if args.engine == "ray":
        from distrec.data.prepare_ray import prepare_domains_ray

        manifests = prepare_domains_ray(
            cfg, args.overwrite, args.domain, address=args.address, workers=args.workers
        )
    else:
        from distrec.data.prepare import prepare_domains

        manifests = prepare_domains(cfg, overwrite=args.overwrite, only=args.domain)
    for manifest in manifests:
        print(f"prepared {manifest}")
    # benchmarks read this line (perf/scale_prep.py)
    print(f"driver peak RSS {peak_rss_mib():.1f} MiB (VmHWM; Ray workers not included)")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from distrec.data.synth import SynthSpec, synth_domain

    spec = SynthSpec(
        name=args.name,
        users=args.users,
        items=args.items,
        mean_length=args.mean_length,
        min_length=args.min_length,
        zipf=args.zipf,
        seed=args.seed,
        users_per_shard=args.users_per_shard,
        rule=args.rule,
        catalog_seed=args.catalog_seed,
        ratings=args.ratings,
        feature_dim=args.feature_dim,
    )
    print(f"wrote {synth_domain(spec, args.out, overwrite=args.overwrite)}")
    return 0


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from distrec.data.inspect import inspect_manifest

    report, ok = inspect_manifest(args.manifest, verify=not args.no_verify)
    print(report)
    return 0 if ok else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from distrec.train.entry import run_training

    return run_training(args.config, args.overrides, resume=args.resume)


def _catalog_overrides(args: argparse.Namespace) -> list[str]:
    """The eval.* settings the evaluate / recommend flags choose."""
    out = [f"eval.catalog={args.catalog}"] if args.catalog else []
    if args.catalog_block:
        out.append(f"eval.catalog_block={args.catalog_block}")
    if getattr(args, "batch_size", None):
        out.append(f"eval.batch_size={args.batch_size}")
    return out


def _print_on_rank_zero(text: str) -> None:
    from distrec.distributed.env import rank_and_world

    if rank_and_world()[0] == 0:
        print(text)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from distrec.train.inference import evaluate_run

    text = evaluate_run(
        args.run,
        domain=args.domain,
        split=args.split,
        export=args.export,
        overrides=_catalog_overrides(args),
        json_out=args.json,
    )
    _print_on_rank_zero(text)
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from distrec.train.inference import recommend

    if args.all_users:
        from distrec.train.batch_inference import AllUsers, recommend_all

        if args.history or not args.out:
            raise ConfigError("--all-users writes --out FILE.parquet and takes no --history")
        ask = AllUsers(
            Path(args.out),
            args.domain,
            args.k,
            args.export,
            args.overwrite,
            tuple(_catalog_overrides(args)),
        )
        recommend_all(args.run, ask)
        return 0
    if not args.history:
        raise ConfigError("recommend: give --history ITEM ... or --all-users --out FILE.parquet")
    print(recommend(args.run, args.domain, args.history, k=args.k, export=args.export))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from distrec.train.batch_inference import export_serving

    export_serving(args.run, args.domain, args.out, export=args.export, overwrite=args.overwrite)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from distrec.demo import run_demo

    return run_demo(args.config, args.overrides, processes=args.processes)


def _cmd_tune(args: argparse.Namespace) -> int:
    from distrec.tune.sweep import resume_sweep, start_sweep

    if args.resume is not None:
        if args.config or args.overrides or args.out:
            raise ConfigError(
                "--resume DIR continues a sweep as it was started; drop --config/--out/overrides"
            )
        return resume_sweep(args.resume, verbose=args.verbose)
    if args.config is None:
        raise ConfigError("distrec tune needs --config FILE (or --resume DIR)")
    return start_sweep(args.config, args.overrides, args.out, verbose=args.verbose)


def _cmd_bench(args: argparse.Namespace) -> int:
    import os
    import subprocess
    from pathlib import Path

    import distrec

    # perf/ ships with the source tree, not the wheel, and distrec never imports it: run
    # the checkout's `python -m perf` as its own process.
    here = [Path(distrec.__file__).resolve().parents[1], Path.cwd()]
    root = next((c for c in here if (c / "perf" / "suite.py").exists()), None)
    if root is None:
        print(
            "distrec bench: the benchmarks (perf/) ship with the source tree, not the wheel; "
            f"run it from a distrec checkout (looked in {', '.join(map(str, here))})",
            file=sys.stderr,
        )
        return 2
    argv = ["--suite", args.suite, *(["--out", args.out] if args.out else [])]
    argv += ["--overwrite"] * args.overwrite + (["--encoder", args.encoder] if args.encoder else [])
    argv += [f"--skip={s}" for s in args.skip] + args.overrides
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return subprocess.call(
        [sys.executable, "-m", "perf", *argv], env={**os.environ, "PYTHONPATH": path}
    )


def _add_config_commands(sub: argparse._SubParsersAction) -> None:
    cfg = sub.add_parser("config", help="validate, show or document run configs")
    cfg_sub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, fn, text in (
        ("validate", _cmd_config_validate, "exit 0 if FILE is a runnable config, else explain"),
        ("show", _cmd_config_show, "print the fully resolved config"),
    ):
        p = cfg_sub.add_parser(name, help=text)
        p.add_argument("file")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
        p.set_defaults(func=fn)
    p = cfg_sub.add_parser("docs", help="print the reference of every config key (generated)")
    p.add_argument("--out", default=None, metavar="PATH", help="write it to PATH instead")
    p.set_defaults(func=_cmd_config_docs)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="fetch, prepare, synthesise and inspect datasets")
    data_sub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = data_sub.add_parser("fetch", help="fetch an embedded dataset (movielens)")
    p.add_argument("dataset", choices=["movielens"])
    p.add_argument("--out", default="data/raw", help="directory for the raw files")
    p.add_argument("--force", action="store_true", help="re-extract even if cached")
    p.set_defaults(func=_cmd_data_fetch)
    p = data_sub.add_parser("prepare", help="import logs and write WebDataset shards + manifest")
    _add_config_args(p)
    p.add_argument("--domain", action="append", help="only this domain (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace a different existing dataset")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: one process holding the log; ray: Ray Data tasks (same output, bounded "
        "driver memory; README 'Data preparation at scale')",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --engine ray: an existing Ray cluster to use ('auto' = the one this node "
        "is part of); default: start a local Ray",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --engine ray and no --address: CPUs of the local Ray (default: all)",
    )
    p.set_defaults(func=_cmd_data_prepare)
    _add_synth_command(data_sub)
    p = data_sub.add_parser("inspect", help="print counts and verify shard hashes")
    p.add_argument("manifest")
    p.add_argument("--no-verify", action="store_true", help="skip sha256 checks")
    p.set_defaults(func=_cmd_data_inspect)


def _add_synth_command(data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser("synth", help="write a synthetic domain of any size")
    p.add_argument("--name", default="synth")
    p.add_argument(
        "--out", required=True, help="prepared-data directory (domain folder goes inside)"
    )
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--mean-length", type=float, default=30.0)
    p.add_argument("--min-length", type=int, default=5)
    p.add_argument("--zipf", type=float, default=1.1, help="popularity exponent")
    p.add_argument("--users-per-shard", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rule",
        type=float,
        default=0.0,
        help="probability that each next item is the previous one's successor (planted rule)",
    )
    p.add_argument(
        "--catalog-seed",
        type=int,
        default=None,
        help="seed of the item texts and the rule's chain (domains sharing it share items)",
    )
    p.add_argument(
        "--ratings",
        action="store_true",
        help="planted 1-5 ratings (user bias + item bias + genre taste + noise) for rating heads",
    )
    p.add_argument(
        "--feature-dim",
        type=int,
        default=0,
        help="write generated item features [items, D] (a genre-seeded Gaussian mixture) that "
        "cached-mode training reads instead of encoding item texts with the LM (0 = none)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_data_synth)


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="run the stages of a run config (also: accelerate launch -m distrec.train)"
    )
    _add_config_args(p)
    p.add_argument(
        "--resume",
        choices=["auto"],
        default=None,
        help="auto: skip finished stages, continue the current one from its newest checkpoint",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="full-ranking evaluation of a finished run")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--domain", default=None, help="domain to evaluate (default: the target)")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument(
        "--export",
        default=None,
        help="an exported model with its own model section, e.g. distill (the distilled student)",
    )
    p.set_defaults(func=_cmd_evaluate)

    p.add_argument("--json", default=None, help="also write the metrics here (full precision)")
    _add_catalog_args(p)

    p = sub.add_parser(
        "recommend",
        help="top-k items for a history of item titles, or for every user (--all-users)",
    )
    p.add_argument("--run", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--history", nargs="+", default=None, help="item ids (titles), oldest first")
    p.add_argument(
        "--all-users",
        action="store_true",
        help="every user of the domain (history masked), sharded across `accelerate launch` ranks",
    )
    p.add_argument("--out", default=None, help="--all-users: the Parquet file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("-k", type=int, default=10)
    p.add_argument(
        "--export",
        default=None,
        help="an exported model with its own model section, e.g. distill (the distilled student)",
    )
    _add_catalog_args(p)
    p.add_argument("--batch-size", type=int, default=None, help="users per batch (eval.batch_size)")
    p.set_defaults(func=_cmd_recommend)

    p = sub.add_parser(
        "export", help="a domain's item vectors and user tower for serving with an ANN index"
    )
    p.add_argument("--run", required=True)
    p.add_argument("--domain", default=None, help="default: the target")
    p.add_argument("--out", required=True, help="folder to write (distrec.models.serving reads it)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--export", default=None, help="an exported model, e.g. distill")
    p.set_defaults(func=_cmd_export)


def _add_catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalog",
        choices=["auto", "replicated", "sharded"],
        default=None,
        help="eval.catalog for this use: split the catalog across launched ranks (sharded)",
    )
    p.add_argument(
        "--catalog-block", type=int, default=None, help="eval.catalog_block: catalog rows per block"
    )


def _add_tool_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="Ray Tune sweep over a run config's tune: section")
    _add_config_args(p, required=False)
    p.add_argument("--out", default=None, help="sweep folder (default: runs/tune-<config name>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the sweep in DIR")
    p.add_argument("--verbose", action="store_true", help="also print the trials' own logs")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser(
        "bench", help="throughput / MFU / memory / scaling benchmarks (runs the checkout's perf/)"
    )
    p.add_argument("--suite", choices=["quick", "full"], default="quick")
    p.add_argument("--out", default=None, help="results folder (default runs/bench-SUITE)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--encoder", choices=["qwen2-1b"], default=None, help="full suite on a GPU")
    p.add_argument("--skip", action="append", default=[], help="baseline|eval|data|memory|scaling")
    p.add_argument("overrides", nargs="*", help="run-config overrides for the benchmarked run")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "demo", help="fetch MovieLens, prepare, train ML-1M -> ML-100K, print the table"
    )
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--processes", type=int, default=2, help="CPU processes for accelerate launch")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The `distrec` argument parser: one sub-command per group (config, data, train, ...)."""
    parser = argparse.ArgumentParser(
        prog="distrec",
        description="Cross-domain recommendation by domain-adapting pretrained LMs, at cluster scale.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_config_commands(sub)
    _add_data_commands(sub)
    _add_run_commands(sub)
    _add_tool_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `distrec` command; returns the exit code (2 for a ConfigError)."""
    from distrec.utils.plugins import load_plugins

    args = build_parser().parse_args(argv)
    try:
        load_plugins()  # extensions named in $DISTREC_PLUGINS register themselves
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
