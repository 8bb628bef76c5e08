"""Preparation cost against log size, engine and workers (`distrec data prepare`).

A synthetic raw log (Zipf item popularity, geometric user lengths, rows in random order)
is written once per size as Parquet with an item table; each measurement prepares it in a
fresh `distrec data prepare` process and reads that process's own peak RSS (VmHWM, from its
log line; Ray workers are other processes and are not included).

    python perf/scale_prep.py --sizes 1e5 1e6 --engines local ray --workers 1 2 \\
        --out perf/results/scale/prep.json

Both engines read the same single Parquet file (row groups of at most 1M rows, which the
Ray engine reads in parallel); `write_raw_log(parts=k)` writes a folder of k part files
for the Ray engine alone (the local engine reads one file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python perf/scale_prep.py`
    sys.path.insert(0, str(ROOT))

_RSS = re.compile(r"driver peak RSS ([0-9.]+) MiB")
_ENGINE_S = re.compile(r"prepared on Ray in ([0-9.]+)s")


# shape: the log's size and shape knobs, keyword-only and defaulted
def write_raw_log(
    out_dir: Path,
    interactions: int,
    *,
    mean_length: float = 40.0,
    items: int | None = None,
    zipf: float = 1.1,
    parts: int = 1,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write a raw log of `interactions` rows and its item table; returns (log, items).

    Users have geometric lengths (mean `mean_length`), items Zipf(`zipf`) popularity over
    `items` (default interactions/100, at least 1000); ids are integers, timestamps integer
    seconds with ties, ratings 1..5. The log is one Parquet file (`parts=1`) or a folder of
    `parts` part files. All vectorised: 10^7 rows take seconds.
    """
    rng = np.random.default_rng(seed)
    n_items = items or max(1000, interactions // 100)
    lengths = rng.geometric(1.0 / mean_length, size=int(interactions / mean_length * 1.3) + 10)
    ends = np.cumsum(lengths)
    n_users = int(np.searchsorted(ends, interactions)) + 1
    lengths = lengths[:n_users]
    lengths[-1] -= int(ends[n_users - 1]) - interactions
    users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf
    item_ids = rng.permutation(n_items).astype(np.int64)  # popularity unrelated to id order
    items_of_rows = item_ids[
        rng.choice(n_items, size=interactions, p=popularity / popularity.sum())
    ]
    order = rng.permutation(interactions)  # a log in arrival order, not grouped by user
    table = pa.table(
        {
            "user_id": users[order],
            "item_id": items_of_rows[order],
            "timestamp": rng.integers(1_600_000_000, 1_600_000_000 + 10**6, interactions),
            "rating": rng.integers(1, 6, interactions, dtype=np.int8),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / ("log.parquet" if parts == 1 else "log")
    group = max(10_000, min(1_000_000, interactions // 16))
    if parts == 1:
        pq.write_table(table, log, row_group_size=group)
    else:
        log.mkdir(exist_ok=True)
        bounds = np.linspace(0, interactions, parts + 1).astype(int)
        for k in range(parts):
            piece = table.slice(bounds[k], bounds[k + 1] - bounds[k])
            pq.write_table(piece, log / f"part-{k:05d}.parquet", row_group_size=group)
    item_table = out_dir / "items.parquet"
    ids = np.arange(n_items, dtype=np.int64)
    titles = pa.array([f"item {i}" for i in ids.tolist()])
    pq.write_table(pa.table({"item_id": ids, "title": titles}), item_table)
    return log, item_table


def _config(workdir: Path, log: Path, items: Path, prepared: Path) -> Path:
    domain = {
        "name": "scale",
        "format": "parquet",
        "interactions": str(log),
        "items": str(items),
        "columns": {"rating": "rating"},
        "text_fields": ["title"],
        "template": "{title}",
        "users_per_shard": 1000,
    }
    cfg = {
        "data": {"prepared_dir": str(prepared), "domains": [domain], "sources": ["scale"]},
        "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
    }
    path = workdir / f"config-{prepared.name}.json"  # JSON is YAML
    path.write_text(json.dumps(cfg))
    return path


def measure_preparation(interactions: int, engine: str, workers: int, workdir: Path) -> dict:
    """Prepare a synthetic log of `interactions` rows with `engine` ("local" or "ray", on a
    local Ray of `workers` CPUs) in a fresh process; returns its time and driver peak RSS."""
    workdir = Path(workdir)
    raw = workdir / f"raw-{interactions}"
    log, items = raw / "log.parquet", raw / "items.parquet"
    if not (log.exists() and items.exists()):
        shutil.rmtree(raw, ignore_errors=True)
        write_raw_log(raw, interactions)
    prepared = workdir / f"prepared-{engine}-{workers}-{interactions}"
    shutil.rmtree(prepared, ignore_errors=True)
    config = _config(workdir, log, items, prepared)
    command = [sys.executable, "-c", "import sys; from distrec.cli import main; sys.exit(main())"]
    command += ["data", "prepare", "--config", str(config), "--engine", engine]
    if engine == "ray":
        command += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    output = done.stdout + done.stderr
    manifest = json.loads((prepared / "scale" / "manifest.json").read_text())
    engine_s = _ENGINE_S.search(output)
    shutil.rmtree(prepared, ignore_errors=True)
    return {
        "engine": engine,
        "workers": workers if engine == "ray" else 1,
        "interactions": interactions,
        "seconds": round(seconds, 2),
        "rows_per_s": round(interactions / seconds, 1),
        "driver_peak_rss_mib": float(_RSS.search(output).group(1)),
        # the Ray engine's own time, without starting and stopping Ray
        "engine_seconds": float(engine_s.group(1)) if engine_s else None,
        "users": manifest["counts"]["users"],
        "shards": len(manifest["shards"]),
        "log": [line for line in output.splitlines() if line.startswith("[distrec]")],
    }


def goals(runs: list[dict]) -> dict:
    """The issue's targets per size: Ray driver peak <= 1/3 of local; 2 workers >= 1.6x 1."""
    out = {}
    for size in sorted({r["interactions"] for r in runs}):
        at = {(r["engine"], r["workers"]): r for r in runs if r["interactions"] == size}
        entry = {}
        ray_runs = [r for (e, _), r in at.items() if e == "ray"]
        if ("local", 1) in at and ray_runs:
            ray_peak = max(r["driver_peak_rss_mib"] for r in ray_runs)
            entry["ray_over_local_driver_peak"] = round(
                ray_peak / at["local", 1]["driver_peak_rss_mib"], 3
            )
        if ("ray", 1) in at and ("ray", 2) in at:
            one, two = at["ray", 1], at["ray", 2]
            entry["ray_2_over_1_rows_per_s"] = round(two["rows_per_s"] / one["rows_per_s"], 3)
            if one["engine_seconds"] and two["engine_seconds"]:
                entry["ray_2_over_1_engine_only"] = round(
                    one["engine_seconds"] / two["engine_seconds"], 3
                )
        out[str(size)] = entry
    return out


def markdown_table(runs: list[dict]) -> str:
    """The runs as a Markdown table (for the README)."""
    lines = [
        "| interactions | engine | workers | seconds (engine only) | rows/s | driver peak RSS |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        engine_s = f" ({r['engine_seconds']:.0f})" if r.get("engine_seconds") else ""
        lines.append(
            f"| {r['interactions']:,} | {r['engine']} | {r['workers']} | "
            f"{r['seconds']:.0f}{engine_s} | {r['rows_per_s']:,.0f} | "
            f"{r['driver_peak_rss_mib']:,.0f} MiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from perf.common import write_result

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6])
    p.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="Ray engine CPUs")
    p.add_argument("--workdir", default="/tmp/distrec-scale-prep", help="raw logs, scratch")
    p.add_argument("--out", default="perf/results/scale/prep.json")
    p.add_argument("--merge", action="store_true", help="keep --out's runs of other settings")
    args = p.parse_args(argv)
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if args.merge and out.exists() else []
    for size in (int(s) for s in args.sizes):
        for engine in args.engines:
            for workers in args.workers if engine == "ray" else [1]:
                run = measure_preparation(size, engine, workers, Path(args.workdir))
                print(json.dumps(run), flush=True)
                key = (run["engine"], run["workers"], run["interactions"])
                runs = [r for r in runs if (r["engine"], r["workers"], r["interactions"]) != key]
                runs.append(run)
    runs.sort(key=lambda r: (r["interactions"], r["engine"], r["workers"]))
    write_result(out, {"runs": runs, "goals": goals(runs)})
    print(markdown_table(runs))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
