"""Recommendations for every user of a domain (`distrec recommend --all-users`), and the
export of a run's item vectors and user tower for serving with an ANN index (`distrec
export`).

Batch inference runs under `accelerate launch` like training: with a replicated catalog each
rank recommends for users rank::world, with a sharded one (eval.catalog) every rank scores
its blocks for every user and the top lists are merged. Users stream from the shards; each
rank writes its rows to a Parquet part as it goes, and rank 0 joins the parts into the
output file, which appears only when complete.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distrec.config import ConfigError
from distrec.data.collate import history_batch
from distrec.eval.beyond import top_items
from distrec.eval.sharded import top_block_sharded
from distrec.models.io import ItemVectors, UserQuery
from distrec.train.evaluation import Evaluator
from distrec.train.inference import load_run
from distrec.utils.progress import log, progress

SCHEMA = pa.schema(
    [("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()), ("score", pa.float32())]
)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing file unless asked (nothing the user had is lost)."""
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out}: already exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist; create it first")


@dataclass(frozen=True)
class AllUsers:
    """What `distrec recommend --all-users` asks for: `k` items per user of `domain` (default
    the target) from the run's model (or its `export`), written to `out`; `overrides`:
    eval.* settings (eval.catalog, eval.batch_size)."""

    out: Path
    domain: str | None = None
    k: int = 100
    export: str | None = None
    overwrite: bool = False
    overrides: tuple[str, ...] = ()


@torch.no_grad()
def recommend_all(run_dir: str, ask: AllUsers) -> Path:
    """Write the top `ask.k` items (history masked) of every user of the domain to `ask.out`
    (Parquet: user, rank 1..k, item, score), sharded across the launched ranks."""
    out, k = Path(ask.out), ask.k
    check_output(out, ask.overwrite)
    if k < 1:
        raise ConfigError(f"-k {k}: must be at least 1")
    ws, model, domain = load_run(run_dir, ask.domain, ask.export, list(ask.overrides))
    d, evaluator, shard = ws.domains[domain], Evaluator(ws), ws.shard()
    names = d.catalog["item_id"].to_numpy()
    size = ws.cfg.eval.batch_size
    users = int(d.manifest.counts["users"])
    sharded = evaluator.sharded_catalog(d)
    part_file = out.with_name(f".{out.name}.part-{shard.rank:05d}")
    writer = pq.ParquetWriter(part_file, SCHEMA)
    with ws.accelerator.autocast():
        if sharded:
            catalog = evaluator.catalog_part(model, d)
            mine, batches = d.stream_sequences(), -(-users // size)
        else:
            catalog = evaluator.catalog(model, d)
            mine = itertools.islice(d.stream_sequences(), shard.rank, None, shard.world)
            per_rank = -(-users // shard.world)
            batches = -(-per_rank // size)
        stream = iter(mine)
        for _ in progress(range(batches), f"{domain}: recommend (batches)"):
            chunk = list(itertools.islice(stream, size))
            histories = [s["items"] for s in chunk] or [[1]]
            if sharded:
                scores, top = sharded_top(evaluator, model, d, catalog, histories, k)
            else:
                scores, top = replicated_top(ws, model, catalog, d.name, histories, k)
            if chunk and (not sharded or shard.rank == 0):
                writer.write_table(rows_table(chunk, scores, top, names))
    writer.close()
    shard.wait()
    if shard.rank == 0:
        join_parts(out, shard.world)
        log(f"{domain}: top {k} for {users} users -> {out}")
    shard.wait()
    return out


def replicated_top(ws, model, catalog: ItemVectors, domain: str, histories, k: int):
    """([B, k] scores, [B, k] items) against the whole catalog this rank holds, the whole
    history masked (not only the part the model reads)."""
    plain = ws.accelerator.unwrap_model(model)
    history, last = history_batch(histories, ws.cfg.data.max_history)
    device = ws.device
    query = UserQuery(domain, history.to(device), last.to(device), catalog.vectors)
    scores = plain.score(model(query), catalog).float().cpu()
    seen = torch.zeros_like(scores, dtype=torch.bool)
    for row, h in enumerate(histories):
        seen[row, h] = True
    top = top_items(scores, seen, k)
    return scores.gather(1, top), top


def sharded_top(evaluator: Evaluator, model, d, part, histories, k: int):
    """`replicated_top` against a catalog split across ranks (every rank, every user)."""
    ws = evaluator.ws
    plain = ws.accelerator.unwrap_model(model)
    history, last = history_batch(histories, ws.cfg.data.max_history)
    users = evaluator.history_users(model, d, part, history, last)

    def score(u, vectors, bias):
        return plain.score(u, ItemVectors(vectors, bias, part.scale))

    return top_block_sharded(users, histories, part, score, k, ws.shard())


def rows_table(chunk: list[dict], scores: torch.Tensor, top: torch.Tensor, names) -> pa.Table:
    """One row per (user, rank) of real recommendations (a user with fewer than k unseen
    items gets fewer rows)."""
    real = top[: len(chunk)] > 0
    users = [s["user"] for s in chunk]
    row, col = real.nonzero(as_tuple=True)
    return pa.table(
        {
            "user": [users[r] for r in row.tolist()],
            "rank": (col + 1).to(torch.int32).numpy(),
            "item": names[(top[row, col] - 1).numpy()],
            "score": scores[row, col].float().numpy(),
        },
        schema=SCHEMA,
    )


def join_parts(out: Path, world: int) -> None:
    """Concatenate the ranks' parts (rank order, row group by row group: bounded memory)
    into a temporary file renamed onto `out` when complete; the parts are removed."""
    parts = [out.with_name(f".{out.name}.part-{r:05d}") for r in range(world)]
    tmp = out.with_name(f".{out.name}.tmp")
    with pq.ParquetWriter(tmp, SCHEMA) as sink:
        for part in parts:
            source = pq.ParquetFile(part)
            for g in range(source.num_row_groups):
                sink.write_table(source.read_row_group(g))
    os.replace(tmp, out)
    for part in parts:
        part.unlink()


# --- export for serving ----------------------------------------------------------------------


@torch.no_grad()
def export_serving(
    run_dir: str,
    domain: str | None,
    out: str | Path,
    export: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `domain`'s item vectors (items.safetensors, items.parquet) and the user tower
    (user_tower.safetensors, serving.json) into folder `out`, for distrec.models.serving."""
    from safetensors.torch import save_file

    from distrec import __version__

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out}: folder is not empty; pass --overwrite to replace it")
    ws, model, domain = load_run(run_dir, domain, export)
    d = ws.domains[domain]
    with ws.accelerator.autocast():
        catalog = Evaluator(ws).catalog(model, d)
    if hasattr(model, "merge_and_unload"):  # a LoRA adapter: fold it into the weights
        model = model.merge_and_unload()
    plain = ws.accelerator.unwrap_model(model)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "vectors": catalog.vectors.float().cpu().contiguous(),
            "bias": catalog.bias.float().cpu().contiguous(),
            "scale": catalog.scale.float().cpu().reshape(1).contiguous(),
        },
        str(out / "items.safetensors"),
    )
    d.catalog[["item_index", "item_id"]].to_parquet(out / "items.parquet", index=False)
    tower = {k: v.float().cpu().contiguous() for k, v in plain.user_tower.state_dict().items()}
    save_file(tower, str(out / "user_tower.safetensors"))
    cfg = ws.cfg.model
    meta = {
        "distrec_version": __version__,
        "run": str(Path(run_dir).resolve()),
        "domain": domain,
        "export": export,
        "dim": int(catalog.vectors.shape[1]),
        "cosine": bool(plain.cosine),
        "max_history": ws.cfg.data.max_history,
        "max_len": int(plain.user_tower.pos.weight.shape[0]),
        "domains": sorted(plain.user_tower.domains, key=plain.user_tower.domains.get),
        "user_tower": cfg.user_tower.model_dump(mode="json"),
    }
    (out / "serving.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"{domain}: {d.num_items} item vectors and the user tower -> {out}")
    return out
