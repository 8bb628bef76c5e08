"""Everything a run shares across stages: config, accelerator, output folder, domain data."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from distrec.config import ConfigError, RunConfig, dump_config
from distrec.data.manifest import Manifest, load_manifest, manifest_path
from distrec.data.shards import read_sequences
from distrec.data.tokens import TokenTable
from distrec.distributed.accelerator import barrier, gather_tensors
from distrec.distributed.env import rank_and_world
from distrec.models.encoder import hidden_size, load_encoder
from distrec.models.features import cached_catalog_features, encode_texts, feature_key
from distrec.utils.progress import log


@dataclass
class DomainData:
    name: str
    manifest: Manifest
    catalog: pd.DataFrame
    features: torch.Tensor | None = None  # cached mode: [N+1, H]
    tokens: TokenTable | None = None  # end-to-end mode
    shard_url: str | None = None  # data.shard_url
    _sequences: list[dict] | None = None

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def texts(self) -> list[str]:
        return self.catalog["text"].tolist()

    @property
    def train_counts(self) -> torch.Tensor:
        """[N+1] training popularity (row 0 = padding, count 0)."""
        return torch.cat(
            [torch.zeros(1), torch.tensor(self.catalog["train_count"].values, dtype=torch.float32)]
        )

    @property
    def share(self) -> torch.Tensor:
        """[N+1] each item's share of training interactions (+1 smoothing; row 0 unused)."""
        c = self.train_counts + 1.0
        return c / c[1:].sum()

    @property
    def popularity(self) -> torch.Tensor:
        """[N+1] log share of the domain's training interactions (+1 smoothing): a feature any
        logged catalog has, so the prior learned on sources applies to a new domain's counts."""
        z = torch.log(self.share)
        z[0] = 0.0
        return z

    def sequences(self) -> list[dict]:
        if self._sequences is None:
            self._sequences = read_sequences(self.manifest.shard_urls(self.shard_url))
        return self._sequences


@dataclass
class Run:
    cfg: RunConfig
    accelerator: object
    precision: str
    out: Path
    domains: dict[str, DomainData] = field(default_factory=dict)
    lm: torch.nn.Module | None = None
    tokenizer: object | None = None
    feature_dim: int = 0
    resume: bool = False
    # Called on every rank after each epoch's checkpoint with (stage, history entry,
    # whether the stage ends here); `distrec tune` reports to Ray Tune through it.
    on_epoch: Callable[[str, dict, bool], None] | None = None

    @property
    def rank_world(self) -> tuple[int, int]:
        return rank_and_world()

    @property
    def is_main(self) -> bool:
        return self.rank_world[0] == 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def prepare_output_dir(cfg: RunConfig, resume: bool) -> Path:
    """Refuse to clobber a finished run unless asked; keep the previous one aside when asked."""
    out = Path(cfg.output.dir)
    rank, _ = rank_and_world()
    finished = (out / "metrics.json").exists()
    if finished and not (cfg.output.overwrite or resume):
        raise ConfigError(
            f"output.dir={str(out)!r} already holds a finished run (metrics.json); set "
            f"output.overwrite=true to replace it, or choose another output.dir"
        )
    if rank == 0:
        if finished and cfg.output.overwrite and not resume:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(cfg))
    barrier()
    return out


def load_domains(run: Run, names: list[str]) -> None:
    """Manifests, catalogs and (cached mode) LM features or (end-to-end) token tables."""
    cfg = run.cfg
    for name in names:
        path = manifest_path(cfg.data.prepared_dir, name)
        if not path.exists():
            raise ConfigError(
                f"domain {name!r}: no prepared data at {path}; run "
                f"`distrec data prepare --config <this config>` first"
            )
        m = load_manifest(path)
        if cfg.model.head == "rating" and not m.data.get("has_ratings"):
            raise ConfigError(
                f"model.head=rating but domain {name!r} has no ratings (its log had no rating "
                f"column); map `columns.rating` when preparing it or use model.head=retrieval|ctr"
            )
        run.domains[name] = DomainData(
            name, m, pd.read_parquet(m.catalog_path), shard_url=cfg.data.shard_url
        )
    if needs_text(cfg):
        _load_lm(run)
        for name in names:
            _attach_text(run, run.domains[name])


def needs_text(cfg: RunConfig) -> bool:
    """Only the popularity and ID-only baselines run without the LM."""
    st = cfg.stages
    return st.pretrain.enabled or st.adapt.enabled or "text_target_only" in st.baselines


def _load_lm(run: Run) -> None:
    cfg = run.cfg.model
    lm, tok = load_encoder(
        cfg.item_encoder, trust_remote_code=cfg.trust_remote_code, dropout=cfg.lm_dropout
    )
    run.lm, run.tokenizer, run.feature_dim = lm.to(run.device), tok, hidden_size(lm)


def _attach_text(run: Run, d: DomainData) -> None:
    cfg = run.cfg
    catalog_sha = d.manifest.data["catalog"]["sha256"]
    if cfg.model.mode == "cached":
        key = feature_key(
            cfg.model.item_encoder,
            cfg.model.pooling,
            d.manifest.data.get("template", ""),
            catalog_sha,
            cfg.model.max_text_tokens,
            run.precision,
        )
        rank, world = run.rank_world

        def encode(texts: list[str]) -> torch.Tensor:
            return encode_texts(
                run.lm,
                run.tokenizer,
                texts,
                cfg.model.pooling,
                cfg.model.max_text_tokens,
                autocast=run.precision == "bf16",
                desc=f"{d.name}: item features",
            )

        d.features = cached_catalog_features(
            key, cfg.cache_dir, d.texts, encode, rank, world, gather_tensors, barrier
        )
    else:
        d.tokens = TokenTable.build(
            run.tokenizer,
            d.texts,
            cfg.model.max_text_tokens,
            cfg.cache_dir,
            cfg.model.item_encoder,
            catalog_sha,
        )
    log(f"{d.name}: {d.num_items} items ready ({cfg.model.mode} mode)")


def write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=float))
    tmp.replace(path)
