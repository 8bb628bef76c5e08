"""Use a finished run: re-evaluate it, or recommend for a history of item titles.

The model is rebuilt from the run folder alone: `config.yaml`, the base weights
in `export/base/` and, for a domain with one, its PEFT adapter in `adapters/` -- or,
when the adapt stage chose full fine-tuning (stages.adapt.mode full/auto), the
fine-tuned weights in `export/<domain>-full/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from distrec.config import ConfigError, load_config
from distrec.data.collate import history_batch
from distrec.eval.beyond import top_items
from distrec.heads.base import target_heads
from distrec.models.io import UserQuery
from distrec.train.domains import check_graph_record
from distrec.train.evaluation import Evaluator
from distrec.train.workspace import Workspace
from distrec.utils.hashing import sha256_file


def load_run(
    run_dir: str | Path,
    domain: str | None,
    export: str | None = None,
    overrides: list[str] | None = None,
):
    """(workspace, model, domain) with the domain's adapter active when it has one; with
    `export`, the model exported with its own model section under export/<domain>-<export>/
    (a distilled student: `distill`, `distill_alone`). `overrides`: eval.* settings for
    this use (eval.catalog, eval.batch_size), never what the model is."""
    from peft import PeftModel

    from distrec.distributed.accelerator import build_accelerator
    from distrec.train.stages.pipeline import base_weights, load_base

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"--run {str(run_dir)!r}: not a distrec run folder (no config.yaml)")
    # Inference runs in whatever process calls it, not under the training launcher.
    bad = [o for o in overrides or [] if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"{bad}: only eval.* settings can change for a finished run")
    cfg = load_config(
        run_dir / "config.yaml",
        [f"output.dir={run_dir}", "distributed.strategy=auto", *(overrides or [])],
    )
    names = [*cfg.data.sources, *([cfg.data.target] if cfg.data.target else [])]
    domain = domain or cfg.data.target or names[0]
    if domain not in names:
        raise ConfigError(f"--domain {domain!r}: this run knows {names}")
    base_file = base_weights(run_dir)
    if not base_file.exists():
        raise ConfigError(f"{base_file}: missing; the run did not finish pretraining")
    accelerator, precision = build_accelerator(cfg)
    ws = Workspace.open(cfg, accelerator, precision, out=run_dir)
    check_graph_record(run_dir, ws.graph, write=False)
    if export is not None:
        return ws, load_export(ws, domain, export), domain
    model = load_base(ws)
    adapter = run_dir / "adapters" / domain
    if domain == cfg.data.target and adapted_mode(run_dir) == "full":
        from safetensors.torch import load_model

        load_model(model, str(run_dir / "export" / f"{domain}-full" / "model.safetensors"))
    elif adapter.exists():
        check_adapter_base(adapter, base_file)
        model = PeftModel.from_pretrained(model, str(adapter), adapter_name=domain)
    model.eval()
    return ws, model, domain


def load_export(ws: Workspace, domain: str, name: str) -> torch.nn.Module:
    """The model of export/<domain>-<name>/: rebuilt from its model.yaml, weights read."""
    from safetensors.torch import load_model

    from distrec.config.schema import ModelConfig
    from distrec.train.stages.pipeline import new_model

    folder = ws.out / "export" / f"{domain}-{name}"
    if not (folder / "model.yaml").exists():
        found = sorted(p.parent.name for p in (ws.out / "export").glob("*/model.yaml"))
        raise ConfigError(
            f"--export {name!r}: {folder} holds no model.yaml; exports with their own model "
            f"section in this run: {found or 'none'} (stages.distill writes <domain>-distill)"
        )
    section = ModelConfig(**yaml.safe_load((folder / "model.yaml").read_text())["model"])
    model = new_model(ws, cfg=section)
    load_model(model, str(folder / "model.safetensors"))
    return model.eval()


def adapted_mode(run_dir: Path) -> str | None:
    """How the run's adapt stage adapted the target (`lora` or `full`), if it ran."""
    stages = run_dir / "stages.json"
    if not stages.exists():
        return None
    return json.loads(stages.read_text()).get("adapt", {}).get("mode")


def check_adapter_base(adapter: Path, base_file: Path) -> None:
    """Refuse an adapter trained on other base weights, naming both."""
    note = json.loads((adapter / "distrec.json").read_text())
    actual = sha256_file(base_file)
    if note["base_sha256"] != actual:
        raise ConfigError(
            f"adapter {adapter} was trained on base weights {note['base']} (sha256 "
            f"{note['base_sha256'][:12]}), but this run's base {base_file} has sha256 {actual[:12]}; "
            f"use the run folder the adapter came from"
        )


def evaluate_run(
    run_dir: str,
    domain: str | None = None,
    split: str = "test",
    export: str | None = None,
    overrides: list[str] | None = None,
    json_out: str | None = None,
) -> str:
    """Full-ranking metrics of a finished run's model (or its `export`, see load_run) on
    `domain`'s `split`, and the metrics of the heads trained for that domain
    (stages.adapt.heads on the target, else model.heads), as text; with `json_out`, also
    written there in full precision (rank 0)."""
    ws, model, domain = load_run(run_dir, domain, export, overrides)
    heads = target_heads(ws.cfg) if domain == ws.cfg.data.target else ws.cfg.model.heads
    metrics = Evaluator(ws).metrics(model, [domain], split, list(heads))
    if json_out and ws.shard().rank == 0:
        record = {"domain": domain, "split": split, "catalog": ws.cfg.eval.catalog, **metrics}
        Path(json_out).write_text(json.dumps(record, indent=2) + "\n")
    rows = [f"{domain} ({split}, {int(metrics['users'])} users, full ranking)"]
    rows += [f"  {k:10s} {v:.4f}" for k, v in metrics.items() if k != "users"]
    return "\n".join(rows)


@torch.no_grad()
def recommend(
    run_dir: str, domain: str, titles: list[str], k: int = 10, export: str | None = None
) -> str:
    """The top `k` items for a history of item ids (`titles`), as text (`export`: load_run)."""
    ws, model, domain = load_run(run_dir, domain, export)
    d = ws.domains[domain]
    index = dict(zip(d.catalog["item_id"], d.catalog["item_index"], strict=True))
    unknown = [t for t in titles if t not in index]
    history = [int(index[t]) for t in titles if t in index]
    lines = []
    if unknown:
        lines.append(f"unknown items (not in the {domain} catalog, ignored): {unknown}")
    if not history:
        raise ConfigError(
            f"--history: none of {titles} is in the {domain} catalog; use exact item ids "
            f"(titles such as 'Toy Story (1995)')"
        )
    limit = ws.cfg.data.max_history
    if len(history) > limit:
        lines.append(
            f"history has {len(history)} items; the model reads the last {limit} (all of them "
            f"are masked from the recommendations)"
        )
    catalog = Evaluator(ws).catalog(model, d)
    hist, last = history_batch([history], limit)  # keeps the newest `limit`
    user = model(UserQuery(domain, hist, last, catalog.vectors))
    scores = model.score(user, catalog).float().cpu()
    seen = torch.zeros_like(scores, dtype=torch.bool)
    seen[0, history] = True
    # top_items: ties to the lower catalog index, as batch inference ranks them.
    top = top_items(scores, seen, k)[0]
    top = top[top > 0]
    names = d.catalog.set_index("item_index")["item_id"]
    lines.append(f"top {len(top)} for {domain}:")
    lines += [
        f"{r + 1:3d}. {names[int(i)]}  ({float(scores[0, i]):.4f})" for r, i in enumerate(top)
    ]
    return "\n".join(lines)
