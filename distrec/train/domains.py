"""A domain as training sees it: manifest, catalog, popularity, and its item text (LM features
in cached mode, a token table end to end, or the generated features a synthetic domain
carries instead: `distrec data synth --feature-dim`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from distrec.config import ConfigError, RunConfig
from distrec.data.kg import ItemGraph, build_graph
from distrec.data.manifest import (
    Manifest,
    damage_report,
    damaged_files,
    load_manifest,
    manifest_path,
)
from distrec.data.shards import read_sequences, stream_sequences
from distrec.data.tokens import TokenTable
from distrec.eval.beyond import ItemProfile, multi_hot
from distrec.heads import HEADS
from distrec.heads.base import target_heads
from distrec.models.features import TextEncoding, cached_catalog_features, encode_texts, feature_key
from distrec.models.io import RatingTotals
from distrec.utils.progress import log
from distrec.utils.sharding import Shard

logger = logging.getLogger(__name__)


@dataclass
class DomainData:
    """One prepared domain; `features` [N+1, H] (cached mode) or `tokens` (end-to-end mode)
    are set when the run reads item text, else both are None."""

    name: str
    manifest: Manifest
    catalog: pd.DataFrame
    features: torch.Tensor | None = None
    tokens: TokenTable | None = None
    shard_url: str | None = None
    category_field: str | None = None
    _sequences: list[dict] | None = field(default=None, repr=False)
    _profile: ItemProfile | None = field(default=None, repr=False)
    # Held-out items with their fixed negatives, drawn once (distrec.train.evaluation).
    held_out_sets: dict = field(default_factory=dict, repr=False)

    @property
    def num_items(self) -> int:
        """N, the catalog's items (indices 1..N; 0 is padding)."""
        return len(self.catalog)

    @property
    def texts(self) -> list[str]:
        """Each catalog item's text, in item order (index i-1 is item i)."""
        return self.catalog["text"].tolist()

    @cached_property
    def train_counts(self) -> torch.Tensor:
        """[N+1] training popularity (row 0 = padding, count 0)."""
        return torch.cat(
            [torch.zeros(1), torch.tensor(self.catalog["train_count"].values, dtype=torch.float32)]
        )

    @cached_property
    def share(self) -> torch.Tensor:
        """[N+1] each item's share of training interactions (+1 smoothing; row 0 unused)."""
        c = self.train_counts + 1.0
        return c / c[1:].sum()

    @cached_property
    def popularity(self) -> torch.Tensor:
        """[N+1] log share of the domain's training interactions (+1 smoothing): a feature any
        logged catalog has, so the prior learned on sources applies to a new domain's counts."""
        z = torch.log(self.share)
        z[0] = 0.0
        return z

    def training_ratings(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(items, ratings) of every training interaction (each sequence but its last two
        items); None when the domain has no ratings."""
        if not self.manifest.data.get("has_ratings"):
            return None
        items = [i for s in self.sequences() for i in s["items"][:-2]]
        ratings = [r for s in self.sequences() for r in s["ratings"][:-2]]
        return torch.tensor(items, dtype=torch.long), torch.tensor(ratings, dtype=torch.float64)

    @cached_property
    def rating_totals(self) -> RatingTotals | None:
        """[N+1] sum and number of each item's training ratings; None without ratings."""
        found = self.training_ratings()
        if found is None:
            return None
        items, ratings = found
        total = torch.zeros(self.num_items + 1, dtype=torch.float64).index_add_(0, items, ratings)
        count = torch.zeros(self.num_items + 1, dtype=torch.float64)
        count.index_add_(0, items, torch.ones(len(items), dtype=torch.float64))
        return RatingTotals(total.float(), count.float())

    @cached_property
    def train_histories(self) -> dict[int, torch.Tensor]:
        """user index -> the items of their training prefix (all but the last two)."""
        return {
            s["index"]: torch.tensor(s["items"][:-2], dtype=torch.long) for s in self.sequences()
        }

    def seen_columns(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[B, C] True where candidate c (catalog indices `candidates` [C]) is in the
        training history of user `users[b]` (a sampled negative must not be one)."""
        column = torch.full((self.num_items + 1,), -1, dtype=torch.long)
        column[candidates] = torch.arange(len(candidates))
        seen = torch.zeros(len(users), len(candidates), dtype=torch.bool)
        for row, user in enumerate(users.tolist()):
            cols = column[self.train_histories.get(user, torch.zeros(0, dtype=torch.long))]
            seen[row, cols[cols >= 0]] = True
        return seen

    def profile(self) -> ItemProfile:
        """Training counts, LM features (cached mode) and categories (`category_field`) of
        the items, for beyond-accuracy metrics (built once)."""
        if self._profile is None:
            self._profile = self._build_profile()
        return self._profile

    def _build_profile(self) -> ItemProfile:
        categories = None
        if self.category_field is not None:
            categories = multi_hot(
                self.catalog[f"field.{self.category_field}"].astype(str).tolist()
            )
        return ItemProfile(self.train_counts, self.features, categories)

    def stream_sequences(self) -> Iterator[dict]:
        """Every user's full sequence in index order, streamed shard by shard (the loaded
        list when training already read it)."""
        if self._sequences is not None:
            return iter(self._sequences)
        return stream_sequences(self.manifest.shard_urls(self.shard_url))

    def eval_users(self, max_users: int | None) -> int:
        """How many users a split evaluates (those with >= 3 items, capped at `max_users`)."""
        found = int(self.manifest.counts["eval_users"])
        return min(found, max_users) if max_users else found

    def sequences(self) -> list[dict]:
        """Every user's full sequence (read once from the shards)."""
        if self._sequences is None:
            self._sequences = read_sequences(self.manifest.shard_urls(self.shard_url))
        return self._sequences


@dataclass(frozen=True)
class ItemText:
    """The loaded LM and tokenizer, and the precision features are encoded in."""

    lm: torch.nn.Module
    tokenizer: object
    feature_dim: int
    precision: str


def read_domain(cfg: RunConfig, name: str) -> DomainData:
    """Manifest and catalog of a prepared domain (no item text yet)."""
    path = manifest_path(cfg.data.prepared_dir, name)
    if not path.exists():
        raise ConfigError(
            f"domain {name!r}: no prepared data at {path}; run "
            f"`distrec data prepare --config <this config>` first"
        )
    m = load_manifest(path)
    verify_domain(cfg, m)
    check_ratings_for_heads(cfg, name, bool(m.data.get("has_ratings")))
    catalog = pd.read_parquet(m.catalog_path)
    category = cfg.domain(name).category_field
    if category is not None and f"field.{category}" not in catalog.columns:
        fields = [c.removeprefix("field.") for c in catalog.columns if c.startswith("field.")]
        raise ConfigError(
            f"domain {name!r}: category_field={category!r} is not an item field of its catalog; "
            f"its fields are {fields}"
        )
    return DomainData(name, m, catalog, shard_url=cfg.data.shard_url, category_field=category)


def verify_domain(cfg: RunConfig, m: Manifest) -> None:
    """Check the prepared files a run reads against the sha256 their manifest records: a
    damaged file is a ConfigError naming it, both hashes and the fix. Shards are checked
    when they are read from prepared_dir (not with data.shard_url); damaged ones are only
    a warning under data.corrupt_shards=skip (the stream skips those it cannot read)."""
    started = time.perf_counter()
    damaged = damaged_files(m, shards=cfg.data.shard_url is None)
    tolerated = cfg.data.corrupt_shards == "skip" and all(
        d.name.startswith("shards/") for d in damaged
    )
    if damaged and not tolerated:
        raise ConfigError(damage_report(m, damaged))
    if damaged:
        logger.warning("%s (data.corrupt_shards=skip: training goes on)", damage_report(m, damaged))
    else:
        log(f"{m.domain}: prepared files verified (sha256) in {time.perf_counter() - started:.2f}s")


def domain_heads(cfg: RunConfig, name: str) -> dict[str, str]:
    """head -> the config key that trains (or judges) it on domain `name`: model.heads on a
    source (pretraining) and on the target (zero-shot), stages.adapt.heads on the target."""
    keys: dict[str, str] = {}
    if name in cfg.data.sources or name == cfg.data.target:
        keys.update({h: "model.heads" for h in cfg.model.heads})
    if name == cfg.data.target:
        keys.update({h: "stages.adapt.heads" for h in target_heads(cfg) if h not in keys})
    return keys


def check_ratings_for_heads(cfg: RunConfig, name: str, has_ratings: bool) -> None:
    """A head that needs ratings refuses a domain without them, naming the key and the fix."""
    if has_ratings:
        return
    for head, key in domain_heads(cfg, name).items():
        if HEADS.get(head).needs_ratings:
            raise ConfigError(
                f"{key} has {head!r} but domain {name!r} has no ratings (its log had no rating "
                f"column); map `columns.rating` when preparing it or drop {head!r} from {key}"
            )


def attach_text(cfg: RunConfig, d: DomainData, text: ItemText, shard: Shard) -> None:
    """Cached mode: the catalog's LM features (from the cache, or encoded sharded over ranks);
    end-to-end mode: its token table."""
    catalog_sha = d.manifest.data["catalog"]["sha256"]
    m = cfg.model
    if m.mode == "cached":
        key = feature_key(
            m.item_encoder,
            m.pooling,
            d.manifest.data.get("template", ""),
            catalog_sha,
            m.max_text_tokens,
            text.precision,
        )
        how = TextEncoding(m.pooling, m.max_text_tokens, autocast=text.precision == "bf16")

        def encode(texts: list[str]) -> torch.Tensor:
            return encode_texts(text.lm, text.tokenizer, texts, how, f"{d.name}: item features")

        d.features = cached_catalog_features(key, cfg.cache_dir, d.texts, encode, shard)
    else:
        d.tokens = TokenTable.build(
            text.tokenizer, d.texts, m.max_text_tokens, cfg.cache_dir, m.item_encoder, catalog_sha
        )
    log(f"{d.name}: {d.num_items} items ready ({m.mode} mode)")


def generated_feature_dim(cfg: RunConfig, domains: dict[str, DomainData]) -> int:
    """D of the generated item features every domain carries (`distrec data synth
    --feature-dim`), used instead of encoding item texts with the LM; 0 when none carries
    them. A mix, differing widths, or end-to-end mode are ConfigErrors naming the fix."""
    dims = {name: d.manifest.feature_dim for name, d in domains.items()}
    have = {name: dim for name, dim in dims.items() if dim}
    if not have:
        return 0
    if cfg.model.mode == "end_to_end":
        raise ConfigError(
            f"model.mode='end_to_end' tokenizes item texts for the LM, but domains "
            f"{sorted(have)} carry generated item features (synth --feature-dim) in place of "
            f"LM ones; set model.mode=cached, or re-synthesise them without --feature-dim"
        )
    lacking = sorted(set(dims) - set(have))
    if lacking:
        raise ConfigError(
            f"domains {sorted(have)} carry generated item features (synth --feature-dim) but "
            f"{lacking} do not and would be encoded by model.item_encoder="
            f"{cfg.model.item_encoder!r}: one item tower cannot read both; synthesise {lacking} "
            f"with --feature-dim {max(have.values())} too, or the others without it"
        )
    if len(set(have.values())) > 1:
        raise ConfigError(
            f"the domains' generated item features differ in width {have}: the item tower has "
            f"one input width; re-synthesise them with the same --feature-dim"
        )
    return next(iter(have.values()))


def attach_generated_features(d: DomainData) -> None:
    """Cached mode over a synthetic domain with generated features: [N+1, D] (row 0 =
    padding) read from its folder; no LM is loaded and nothing is encoded."""
    path = d.manifest.features_path
    features = load_file(str(path))["features"]
    if features.shape != (d.num_items, d.manifest.feature_dim):
        raise ConfigError(
            f"domain {d.name!r}: {path} holds {tuple(features.shape)} features for "
            f"{d.num_items} items of width {d.manifest.feature_dim}; re-synthesise it with "
            f"--overwrite"
        )
    d.features = torch.cat([torch.zeros(1, features.shape[1]), features.float()])
    log(f"{d.name}: {d.num_items} items ready (generated features, width {features.shape[1]})")


def item_graph(cfg: RunConfig, opened: dict[str, DomainData]) -> ItemGraph | None:
    """The knowledge graph over every domain of the run (sources and target, whichever of
    them a process opened, so the entity vocabulary is always the same; `opened` are read
    already); None without model.kg."""
    if cfg.model.kg is None:
        return None
    names = [*cfg.data.sources, *([cfg.data.target] if cfg.data.target else [])]
    catalogs = {
        n: ((opened[n] if n in opened else read_domain(cfg, n)).catalog, cfg.domain(n))
        for n in names
    }
    graph = build_graph(catalogs, cfg.model.kg.max_neighbours)
    edges = ", ".join(f"{n} {graph.edges(n)}" for n in names)
    log(
        f"knowledge graph: {len(graph.entities) - 1} entities, {len(graph.relations) - 1} "
        f"relations; item edges: {edges}"
    )
    return graph


def check_graph_record(out: Path, graph: ItemGraph | None, write: bool) -> None:
    """A run's knowledge graph is rebuilt from the data whenever its model is: its entity and
    relation vocabularies are kept in <run>/kg.json (`write`: a new run's rank 0 records
    them) and every later rebuild (resume, evaluate, recommend) must match them, or entity
    rows would silently mean other entities."""
    if graph is None:
        return
    path = out / "kg.json"
    vocab = {"relations": graph.relations, "entities": graph.entities}
    if write:
        path.write_text(json.dumps(vocab))
        return
    if not path.exists():  # a run from before kg.json was kept
        return
    saved = json.loads(path.read_text())
    if saved != vocab:
        lost = sorted(set(saved["entities"]) - set(graph.entities))[:3]
        new = sorted(set(graph.entities) - set(saved["entities"]))[:3]
        raise ConfigError(
            f"{path}: the knowledge graph rebuilt from the data ({len(graph.entities) - 1} "
            f"entities) is not the one this run trained with ({len(saved['entities']) - 1}; "
            f"gone {lost}, new {new}): data.domains[].kg_fields, kg_triples or a catalog changed "
            f"since; restore them or train a new run"
        )
