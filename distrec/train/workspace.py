"""`Workspace`: what every stage of a run shares, complete from construction.

Config, accelerator, precision, output folder, the domains' data and (when a
stage reads item text) the LM, unless the domains carry generated item features
(`distrec data synth --feature-dim`), which stand in for the LM's. Built once by
`Workspace.open`; nothing is filled in later.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from distrec.config import ConfigError, RunConfig, dump_config
from distrec.data.kg import ItemGraph
from distrec.distributed.collectives import barrier, gather_tensors
from distrec.distributed.env import rank_and_world
from distrec.models.encoder import attention_for, hidden_size, load_encoder
from distrec.train.domains import (
    DomainData,
    ItemText,
    attach_generated_features,
    attach_text,
    generated_feature_dim,
    item_graph,
    read_domain,
)
from distrec.utils.sharding import Shard


@dataclass(frozen=True)
class Workspace:
    """A run's shared, typed state. `text` is None when no stage reads item text (only the
    popularity and ID-only baselines run) or the domains carry generated features in place
    of the LM's; `graph` is the item knowledge graph (model.kg)."""

    cfg: RunConfig
    accelerator: Accelerator
    precision: str
    out: Path
    domains: dict[str, DomainData]
    text: ItemText | None = None
    resume: bool = False
    graph: ItemGraph | None = None

    @classmethod
    def open(
        cls,
        cfg: RunConfig,
        accelerator: Accelerator,
        precision: str,
        *,
        out: Path | None = None,
        resume: bool = False,
        names: list[str] | None = None,
    ) -> Workspace:
        """Read every domain of the run (sources, then target; or only `names`) and its item
        text; `out` defaults to output.dir."""
        if names is None:
            names = [*cfg.data.sources, *([cfg.data.target] if cfg.data.target else [])]
        domains = {name: read_domain(cfg, name) for name in names}
        text = None
        if needs_text(cfg) and generated_feature_dim(cfg, domains):
            for d in domains.values():
                attach_generated_features(d)
        elif needs_text(cfg):
            text = load_item_text(cfg, accelerator.device, precision)
            for d in domains.values():
                attach_text(cfg, d, text, collective_shard())
        out = Path(cfg.output.dir) if out is None else out
        return cls(
            cfg, accelerator, precision, out, domains, text, resume, item_graph(cfg, domains)
        )

    @property
    def rank_world(self) -> tuple[int, int]:
        """(rank, world size) of this process (`distrec.distributed.env.rank_and_world`)."""
        return rank_and_world()

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's shared files."""
        return self.rank_world[0] == 0

    @property
    def device(self) -> torch.device:
        """The accelerator's device for this process."""
        return self.accelerator.device

    @property
    def feature_dim(self) -> int:
        """The item features' width: the LM's hidden size, or the domains' generated features'
        (0 without item text)."""
        if self.text is not None:
            return self.text.feature_dim
        widths = [d.features.shape[1] for d in self.domains.values() if d.features is not None]
        return widths[0] if widths else 0

    def shard(self) -> Shard:
        """This process's slice of sharded work, with the real collectives."""
        return collective_shard()


def collective_shard() -> Shard:
    """This process's Shard, with the real gather and barrier collectives."""
    rank, world = rank_and_world()
    return Shard(rank, world, gather_tensors, barrier)


def needs_text(cfg: RunConfig) -> bool:
    """Only the popularity and ID-only baselines run without the LM; a contributed stage
    (stages.extra) may read item text, so it gets the LM."""
    st = cfg.stages
    text_stage = st.pretrain.enabled or st.adapt.enabled or "text_target_only" in st.baselines
    return text_stage or bool(st.extra)


def load_item_text(cfg: RunConfig, device: torch.device, precision: str) -> ItemText:
    """The item encoder and tokenizer, on `device`."""
    m = cfg.model
    lm, tokenizer = load_encoder(
        m.item_encoder,
        trust_remote_code=m.trust_remote_code,
        dropout=m.lm_dropout,
        attention=attention_for(m.attention, m.mode, device),
    )
    return ItemText(lm.to(device), tokenizer, hidden_size(lm), precision)


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


def write_json(path: Path, value: dict) -> None:
    """Write `value` as JSON atomically (a temporary file renamed into place)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=float))
    tmp.replace(path)
