"""Full-catalog evaluation of a model during and after training, sharded over ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from distrec.config.schema import ModelConfig
from distrec.config.training import SHARD_CATALOG_ABOVE
from distrec.data.collate import history_batch
from distrec.eval.beyond import beyond_accuracy
from distrec.eval.evaluate import (
    Ranking,
    UserRanks,
    case_batches,
    eval_cases,
    rank_sharded,
    stream_cases,
)
from distrec.eval.held_out import HeldOutSet, Judged, fixed_negatives, judge_sharded
from distrec.eval.metrics import metrics_from_ranks
from distrec.eval.sharded import Blocks, CatalogPart, rank_block_sharded
from distrec.heads import HEADS, HeldOut
from distrec.models.io import ItemBatch, ItemVectors, PairQuery, UserQuery
from distrec.train.batches import candidate_totals
from distrec.train.domains import DomainData
from distrec.train.workspace import Workspace
from distrec.utils.sharding import Shard


def mean_metrics(per_domain: list[dict[str, float]]) -> dict[str, float]:
    """Mean over domains of the metrics they all have; one domain gives its metrics unchanged
    (a category metric exists only for domains with a category_field)."""
    keys = [k for k in per_domain[0] if all(k in p for p in per_domain[1:])]
    return {k: sum(p[k] for p in per_domain) / len(per_domain) for k in keys}


def domain_metrics(found: UserRanks, d: DomainData, ks: list[int]) -> dict[str, float]:
    """Accuracy metrics of `found`'s ranks plus beyond-accuracy metrics of its top lists."""
    return {**metrics_from_ranks(found.ranks, ks), **beyond_accuracy(found.top, d.profile(), ks)}


def reads_text(model: nn.Module) -> bool:
    """Whether the model's item tower reads item text (an ID-only one does not)."""
    return bool(model.item_tower.reads_text)


@dataclass(frozen=True)
class HeadResults:
    """The heads' own metrics on one domain's split, and the per-user columns behind them
    (`user` [U] plus each head's, e.g. rating, rating_pred; empty without such heads)."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_user: dict[str, torch.Tensor] = field(default_factory=dict)


class Evaluator:
    """Ranks every evaluated user's held-out item against the whole catalog, and judges it
    beside fixed sampled negatives for the heads' own metrics."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def ranking(self, d: DomainData, lists: bool = False) -> Ranking:
        """How domain `d` is ranked: its whole catalog, data.max_history, eval.batch_size; with
        `lists`, also each user's top-K list (K = the largest eval.ks) for beyond-accuracy
        metrics (stage records; per-epoch validation needs the ranks alone)."""
        cfg = self.ws.cfg
        top_k = max(cfg.eval.ks) if lists else 0
        return Ranking(d.num_items, cfg.data.max_history, cfg.eval.batch_size, top_k)

    @torch.no_grad()
    def metrics(
        self, model: nn.Module, domains: list[str], split: str, heads: Sequence[str] = ()
    ) -> dict[str, float]:
        """Mean over `domains` of full-ranking accuracy metrics (eval.ks, MRR@10), beyond-
        accuracy metrics, and the metrics of the `heads` that have their own."""
        ks = self.ws.cfg.eval.ks
        per_domain = []
        for name in domains:
            d = self.ws.domains[name]
            found, head = self.evaluate(model, d, split, heads)
            per_domain.append({**domain_metrics(found, d, ks), **head.metrics})
        return mean_metrics(per_domain)

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        d: DomainData,
        split: str,
        heads: Sequence[str] = (),
        lists: bool = False,
    ) -> tuple[UserRanks, HeadResults]:
        """`ranks` and the `heads`' own results on `split`, from one encoding of the catalog."""
        was_training = model.training
        model.eval()
        with self.ws.accelerator.autocast():
            sharded = self.sharded_catalog(d)
            catalog = self.catalog_part(model, d) if sharded else self.catalog(model, d)
            found = self.ranks(model, d, split, lists, catalog)
            head = self.head_metrics(model, d, split, heads, catalog)
        model.train(was_training)
        return found, head

    def sharded_catalog(self, d: DomainData) -> bool:
        """Whether `d`'s catalog is split across ranks (eval.catalog) rather than replicated."""
        choice, world = self.ws.cfg.eval.catalog, self.ws.shard().world
        if choice == "auto":
            return world > 1 and d.num_items > SHARD_CATALOG_ABOVE
        return choice == "sharded"

    def blocks(self, d: DomainData) -> Blocks:
        """`d`'s catalog table rows (0..N) in blocks of eval.catalog_block."""
        return Blocks(d.num_items + 1, self.ws.cfg.eval.catalog_block)

    @torch.no_grad()
    def ranks(
        self,
        model: nn.Module,
        d: DomainData,
        split: str,
        lists: bool = False,
        catalog: ItemVectors | CatalogPart | None = None,
    ) -> UserRanks:
        """Every evaluated user's target rank in `split` (gathered on every rank), and with
        `lists` their top-K lists; `catalog`: already encoded item vectors (or this rank's
        part of them). Users are streamed from the shards, one batch at a time."""
        acc = self.ws.accelerator
        was_training = model.training
        model.eval()
        # Towers under autocast (fast); the scores themselves in fp32 (Recommender.score).
        with acc.autocast():
            if self.sharded_catalog(d):
                found = self.ranks_sharded_catalog(model, d, split, lists, catalog)
            else:
                found = self.ranks_replicated(model, d, split, lists, catalog)
        model.train(was_training)
        return found

    def ranks_replicated(
        self, model: nn.Module, d: DomainData, split: str, lists: bool, catalog
    ) -> UserRanks:
        """Every rank holds the whole catalog and ranks its share of the users; scores are
        computed block by block, as the sharded layout does, so both give the same bits."""
        plain = self.ws.accelerator.unwrap_model(model)  # attributes; calls go through `model`
        catalog = catalog if catalog is not None else self.catalog(model, d)
        blocks = self.blocks(d).all()

        def score(history: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
            device = self.ws.device
            query = UserQuery(d.name, history.to(device), last.to(device), catalog.vectors)
            users = model(query)
            parts = [
                plain.score(
                    users, ItemVectors(catalog.vectors[a:b], catalog.bias[a:b], catalog.scale)
                )
                for a, b in blocks
            ]
            return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

        max_users = self.ws.cfg.eval.max_users
        cases = stream_cases(d.stream_sequences(), split, max_users)
        total = d.eval_users(max_users)
        return rank_sharded(cases, score, self.ranking(d, lists), self.ws.shard(), total)

    def ranks_sharded_catalog(
        self, model: nn.Module, d: DomainData, split: str, lists: bool, part
    ) -> UserRanks:
        """Every rank scores every user against its own blocks of the catalog (eval.catalog
        =sharded); ranks and top lists are combined across ranks (distrec.eval.sharded)."""
        plain = self.ws.accelerator.unwrap_model(model)
        part = part if isinstance(part, CatalogPart) else self.catalog_part(model, d)
        cfg, shard, device = self.ws.cfg, self.ws.shard(), self.ws.device
        how = self.ranking(d, lists)

        def score(users: torch.Tensor, vectors: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return plain.score(users, ItemVectors(vectors, bias, part.scale))

        total = d.eval_users(cfg.eval.max_users)
        cases = stream_cases(d.stream_sequences(), split, cfg.eval.max_users)
        users, ranks, tops = [], [], []
        for chunk in case_batches(cases, how.batch_size, -(-total // how.batch_size)):
            history, last = history_batch([c.history for c in chunk], how.max_history)
            vectors = self.history_users(model, d, part, history, last)
            r, top = rank_block_sharded(vectors.to(device), chunk, part, score, how.top_k, shard)
            users.append(torch.tensor([c.user for c in chunk], dtype=torch.long))
            ranks.append(r)
            tops.append(top)
        if not ranks:
            empty = torch.zeros(0, dtype=torch.long)
            return UserRanks(empty, torch.zeros(0, dtype=torch.float64), empty[:, None][:, :0])
        return UserRanks(torch.cat(users), torch.cat(ranks), torch.cat(tops))

    def history_users(
        self,
        model: nn.Module,
        d: DomainData,
        part: CatalogPart,
        history: torch.Tensor,
        last: torch.Tensor,
    ) -> torch.Tensor:
        """User vectors of `history` [B, T] whose item vectors come from the ranks that own
        them: the batch's distinct history items are looked up (gathered), re-indexed."""
        items, local = torch.unique(history, return_inverse=True)
        vectors, _ = part.lookup(items, self.ws.shard())
        vectors[items == 0] = 0.0  # padding row
        device = self.ws.device
        query = UserQuery(d.name, local.to(device), last.to(device), vectors.to(device))
        return model(query)

    @torch.no_grad()
    def catalog_part(self, model: nn.Module, d: DomainData) -> CatalogPart:
        """This rank's blocks of `d`'s catalog (eval.catalog=sharded): each block encoded in
        chunks (eval.batch_size end to end, whole cached), with dummy forwards so every rank
        runs as many as the busiest (ZeRO-3/FSDP)."""
        text = reads_text(self.ws.accelerator.unwrap_model(model))
        e2e = d.tokens is not None and text
        shard, blocks = self.ws.shard(), self.blocks(d)
        size = self.ws.cfg.eval.batch_size if e2e else blocks.size

        def calls(owned: list[tuple[int, int]]) -> int:
            return sum(-(-(b - max(a, 1)) // size) for a, b in owned if b > max(a, 1))

        busiest = max(calls(blocks.owned(Shard(r, shard.world))) for r in range(shard.world))
        part = CatalogPart(d.num_items + 1, [], [], [], torch.ones(1), 0)
        made = 0
        for a, b in blocks.owned(shard):
            rows = [torch.zeros(1, 0)] if a == 0 else []
            for start in range(max(a, 1), b, size):
                idx = torch.arange(start, min(start + size, b))
                out = model(self.item_batch(d, idx, text, e2e))
                rows.append(torch.cat([out.vectors.float(), out.bias.float()[:, None]], 1).cpu())
                part.scale, made = out.scale.float().reshape(-1)[:1].cpu(), made + 1
                part.dim = out.vectors.shape[1]
            if a == 0:
                rows[0] = torch.zeros(1, rows[1].shape[1] if len(rows) > 1 else 1)
            table = torch.cat(rows)
            part.blocks.append((a, b))
            part.vectors.append(table[:, :-1])
            part.bias.append(table[:, -1])
        for _ in range(busiest - made):
            out = model(self.item_batch(d, torch.tensor([1]), text, e2e))
            part.scale, part.dim = out.scale.float().reshape(-1)[:1].cpu(), out.vectors.shape[1]
        return part

    def held_out(self, d: DomainData, split: str) -> HeldOutSet:
        """`split`'s cases of `d` with their fixed negatives (eval.ctr_negatives, seeded by
        the run's seed; drawn once per domain and split)."""
        cfg = self.ws.cfg
        key = (split, cfg.eval.ctr_negatives, cfg.seed, cfg.eval.max_users)
        if key not in d.held_out_sets:
            cases = eval_cases(d.sequences(), split, cfg.eval.max_users)
            d.held_out_sets[key] = fixed_negatives(
                cases, d.num_items, cfg.eval.ctr_negatives, cfg.seed, f"{d.name}/{split}"
            )
        return d.held_out_sets[key]

    @torch.no_grad()
    def judged(
        self, model: nn.Module, d: DomainData, split: str, catalog: ItemVectors | CatalogPart
    ) -> Judged:
        """Two-tower scores and head-module outputs of every held-out item and its negatives.
        With a sharded catalog every rank judges every user (the vectors each batch needs
        are gathered from the ranks that own them), so all ranks run the same lookups."""
        device, shard = self.ws.device, self.ws.shard()
        sharded = isinstance(catalog, CatalogPart)

        def judge(history, last, items, ratings):
            totals = candidate_totals(d, items[:, 0], device)
            table = catalog
            if sharded:
                needed, local = torch.unique(torch.cat([history, items], 1), return_inverse=True)
                vectors, bias = catalog.lookup(needed, shard)
                vectors[needed == 0] = 0.0
                table = ItemVectors(vectors.to(device), bias.to(device), catalog.scale.to(device))
                history, items = local[:, : history.shape[1]], local[:, history.shape[1] :]
            query = PairQuery(
                d.name,
                history.to(device),
                last.to(device),
                items.to(device),
                table,
                ratings.to(device) if ratings is not None else None,
                totals,
            )
            return model(query)

        cfg = self.ws.cfg
        users = Shard() if sharded else shard
        held = self.held_out(d, split)
        return judge_sharded(held, judge, cfg.data.max_history, cfg.eval.batch_size, users)

    def head_metrics(
        self,
        model: nn.Module,
        d: DomainData,
        split: str,
        heads: Sequence[str],
        catalog: ItemVectors,
    ) -> HeadResults:
        """The results of each of `heads` that judges itself on the held-out items."""
        if not any(HEADS.get(name).metrics is not None for name in heads):
            return HeadResults()
        found = self.judged(model, d, split, catalog)
        held = HeldOut(found.scores, found.outputs, found.ratings, d.train_counts[found.items])
        return judge_heads(heads, held, found.users, self.ws.cfg.model)

    @torch.no_grad()
    def catalog(self, model: nn.Module, d: DomainData) -> ItemVectors:
        """The whole catalog's vectors [N+1, d] and bias [N+1] (row 0 = padding), encoded
        in chunks sharded over ranks end to end (a projection of cached features is cheap:
        every rank does it all), gathered on every rank."""
        text = reads_text(self.ws.accelerator.unwrap_model(model))
        e2e = d.tokens is not None and text
        shard = self.ws.shard() if e2e else None
        rank, world = (shard.rank, shard.world) if shard else (0, 1)
        mine = list(range(1 + rank, d.num_items + 1, world))
        size = self.ws.cfg.eval.batch_size if e2e else max(1, len(mine))
        chunks = math.ceil(math.ceil(d.num_items / world) / size)
        packed, scale = [], None
        for c in range(chunks):  # equal forward counts on every rank (ZeRO-3/FSDP)
            idx = torch.tensor(mine[c * size : (c + 1) * size] or [1])
            out = model(self.item_batch(d, idx, text, e2e))
            rows = torch.cat([out.vectors.float(), out.bias.float()[:, None]], 1).cpu()
            packed.append(rows[: len(mine[c * size : (c + 1) * size])])
            scale = out.scale
        local = torch.cat(packed)
        parts = shard.gathered(local) if shard else [local]
        table = torch.zeros(d.num_items + 1, local.shape[1])
        for r, part in enumerate(parts):
            table[1 + r :: world][: part.shape[0]] = part
        table = table.to(self.ws.device)
        return ItemVectors(table[:, :-1], table[:, -1], scale.float().reshape(-1)[:1])

    def item_batch(self, d: DomainData, idx: torch.Tensor, text: bool, e2e: bool) -> ItemBatch:
        """Catalog items `idx` [n] as the model reads them: tokens end to end, cached features,
        or IDs alone."""
        device = self.ws.device
        popularity = d.popularity[idx].to(device)
        if e2e:
            width = max(1, int(d.tokens.lengths[idx].max()))
            mask = (torch.arange(width)[None, :] < d.tokens.lengths[idx, None]).long()
            pad = self.ws.text.tokenizer.pad_token_id
            ids = d.tokens.input_ids[idx, :width].long().masked_fill(mask == 0, pad)
            return ItemBatch(
                d.name,
                idx.to(device),
                popularity,
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
            )
        features = d.features[idx].to(device) if text else None
        return ItemBatch(d.name, idx.to(device), popularity, features=features)


def judge_heads(
    heads: Sequence[str], held: HeldOut, users: torch.Tensor, cfg: ModelConfig
) -> HeadResults:
    """Every head's metrics and per-user columns on `held` (rows are `users`)."""
    results = HeadResults(per_user={"user": users})
    for name in heads:
        head = HEADS.get(name)
        if head.metrics is not None:
            results.metrics.update(head.metrics(held, cfg))
        if head.per_user is not None:
            results.per_user.update(head.per_user(held, cfg))
    return results
