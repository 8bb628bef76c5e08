"""Domain-adversarial alignment while pretraining (model.domain_adversarial), and the probe
that measures how well a fresh classifier still tells the domains apart.

Each domain's items are split once, by a hash of the item's text, into items the classifier
trains on and held-out items its accuracy is measured on (balanced over the two domains, so
chance is 50%). The target contributes catalog items only: no interaction of the target is
read, so the zero-shot stage stays zero-shot.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from distrec.config import ConfigError
from distrec.config.schema import DomainAdversarialConfig
from distrec.heads import LossContext
from distrec.models.alignment import DomainCritic, reversal_strength
from distrec.models.io import AlignBatch, ItemBatch, TrainBatch, TrainOutputs
from distrec.train.evaluation import Evaluator
from distrec.train.trainer import LossTerm, Trainer
from distrec.train.workspace import Workspace
from distrec.utils.progress import log

PROBE_STEPS = 300
PROBE_LR = 1e-2
# Items per domain and split that accuracies are measured on (the first, in the hash split).
MAX_MEASURED = 4096


def held_out_items(texts: list[str], fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) catalog indices of a domain's items (`texts` in item order), split by
    a hash of each item's text: the same item in two catalogs (the same text) is held out in
    both or in neither, so a classifier cannot score by remembering it under the other label."""
    bucket = torch.tensor(
        [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big") / 2**32 for t in texts]
    )
    items = torch.arange(1, len(texts) + 1)
    return items[bucket >= fraction], items[bucket < fraction]


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the two classes of the share predicted right (chance = 0.5)."""
    right = (logits > 0).float() == labels
    per_class = [right[labels == c].float().mean() for c in (0.0, 1.0) if (labels == c).any()]
    return float(torch.stack(per_class).mean())


def align_batch(
    ws: Workspace, chosen: dict[str, torch.Tensor], cfg: DomainAdversarialConfig, reversal: float
) -> AlignBatch:
    """The AlignBatch of catalog items `chosen` (domain -> indices); `on: user` adds
    pseudo-histories over them (positions drawn by a generator seeded from the items)."""
    evaluator = Evaluator(ws)
    items: dict[str, ItemBatch] = {}
    histories = {} if cfg.on == "user" else None
    for name, idx in chosen.items():
        d = ws.domains[name]
        items[name] = evaluator.item_batch(d, idx, text=True, e2e=d.tokens is not None)
        if histories is not None:
            gen = torch.Generator().manual_seed(int(idx.sum()) % 2**31)
            shape = (len(idx), min(cfg.history, ws.cfg.data.max_history))
            histories[name] = torch.randint(1, len(idx) + 1, shape, generator=gen).to(ws.device)
    return AlignBatch(items, ws.cfg.data.target, reversal, cfg.on, histories)


class DomainAlignment(LossTerm):
    """The adversarial term of pretraining: each step, `items` training items of the batch's
    source and of the target go through the critic behind a gradient-reversal layer; at each
    epoch end the critic's held-out accuracy goes into the epoch's history entry (before the
    epoch's checkpoint)."""

    def __init__(self, ws: Workspace, cfg: DomainAdversarialConfig) -> None:
        self.ws, self.cfg, self.target = ws, cfg, ws.cfg.data.target
        self.schedule = cfg.schedule
        names = [*ws.cfg.data.sources, self.target]
        self.split = {n: held_out_items(ws.domains[n].texts, cfg.held_out) for n in names}

    def request(self, trainer: Trainer, request: TrainBatch) -> TrainBatch:
        """`request` with this step's alignment items (drawn with the trainer's checkpointed
        generator, so a resumed stage draws what the uninterrupted one did)."""
        reversal = reversal_strength(self.schedule, trainer.progress)
        chosen = {}
        for name in (request.domain, self.target):
            pool = self.split[name][0]
            pick = torch.randint(0, len(pool), (self.cfg.items,), generator=trainer.state.gen)
            chosen[name] = pool[pick]
        return dataclasses.replace(request, align=align_batch(self.ws, chosen, self.cfg, reversal))

    def loss(self, trainer: Trainer, out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
        """weight x the critic's binary cross-entropy (its gradient reversed into the towers);
        zero on a batch without a valid window (it only keeps ranks in step)."""
        logits, labels = out.domain
        if not bool(ctx.batch.valid.any()):
            return logits.sum() * 0.0
        return self.cfg.weight * F.binary_cross_entropy_with_logits(logits.float(), labels)

    def epoch_metrics(self, trainer: Trainer) -> dict[str, float]:
        """The critic's balanced accuracy on held-out items and this epoch's reversal."""
        held = {n: self.split[n][1] for n in (*self.ws.cfg.data.sources, self.target)}
        with torch.no_grad():
            trainer.model.eval()
            accuracy = pair_accuracies(trainer.model, self.ws, held, self.cfg)
            trainer.model.train()
        reversal = reversal_strength(self.schedule, trainer.progress)
        trainer.accelerator.log(
            {f"{trainer.plan.name}/domain_accuracy": accuracy}, step=trainer.state.epoch
        )
        log(
            f"{trainer.plan.name} epoch {trainer.state.epoch}: domain classifier accuracy "
            f"{accuracy:.1%} on held-out items (reversal {reversal:.2f}; chance 50%)"
        )
        return {"domain_accuracy": accuracy, "reversal": reversal}


def pair_accuracies(
    model: nn.Module, ws: Workspace, held: dict[str, torch.Tensor], cfg: DomainAdversarialConfig
) -> float:
    """Mean over sources of the critic's balanced accuracy on (source, target) held-out items,
    through the model's forward (every rank runs the same requests)."""
    target = ws.cfg.data.target
    found = []
    for source in ws.cfg.data.sources:
        logits, labels = [], []
        for part in chunks(ws, {source: held[source], target: held[target]}):
            out = model(align_batch(ws, part, cfg, 0.0))
            logits.append(out.logits.float())
            labels.append(out.labels)
        found.append(balanced_accuracy(torch.cat(logits), torch.cat(labels)))
    return sum(found) / len(found)


def chunks(ws: Workspace, items: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """`items` (at most MAX_MEASURED per domain) in pieces the model encodes at once: all of
    them from cached features, eval.batch_size per domain when the LM runs (end to end)."""
    items = {n: idx[:MAX_MEASURED] for n, idx in items.items()}
    e2e = any(ws.domains[n].tokens is not None for n in items)
    size = ws.cfg.eval.batch_size if e2e else MAX_MEASURED
    steps = range(0, max(len(idx) for idx in items.values()), size)
    return [
        {n: idx[i : i + size] for n, idx in items.items() if len(idx[i : i + size])} for i in steps
    ]


def attach_critic(model: nn.Module, ws: Workspace) -> None:
    """Give the model a fresh domain critic (seeded apart from the towers)."""
    if not hasattr(model.item_tower, "content"):
        raise ConfigError(
            f"model.domain_adversarial needs an item tower with content vectors (two_tower); "
            f"model.architecture={ws.cfg.model.architecture!r} has none: set it to null"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ws.cfg.seed + 2)
        model.critic = DomainCritic(ws.cfg.model.dim).to(ws.device)


def detach_critic(model: nn.Module) -> None:
    """Remove the critic: the exported base holds only what inference uses."""
    model.critic = None


def representations(
    model: nn.Module, ws: Workspace, items: dict[str, torch.Tensor], on: str
) -> dict[str, torch.Tensor]:
    """A plain model's aligned representations of `items` (no gradient)."""
    cfg = ws.cfg.model.domain_adversarial or DomainAdversarialConfig(on=on)
    found: dict[str, list[torch.Tensor]] = {n: [] for n in items}
    with torch.no_grad():
        model.eval()
        for part in chunks(ws, items):
            for name, reps in model.aligned_representations(
                align_batch(ws, part, cfg, 0.0)
            ).items():
                found[name].append(reps)
    return {name: torch.cat(parts) for name, parts in found.items()}


def domain_probe(model: nn.Module, ws: Workspace, seed: int) -> dict[str, float]:
    """How separable the domains still are: a fresh critic trained (full batch, seeded) on
    the training items' representations from a plain `model`, its balanced accuracy on the
    held-out items, per source against the target, averaged. Runs with or without
    alignment, so the unaligned value is measured the same way."""
    cfg = ws.cfg.model.domain_adversarial or DomainAdversarialConfig()
    target, accuracies = ws.cfg.data.target, []
    splits = {n: held_out_items(ws.domains[n].texts, cfg.held_out) for n in ws.domains}
    for source in ws.cfg.data.sources:
        parts = [{n: splits[n][i] for n in (source, target)} for i in (0, 1)]
        train, held = (representations(model, ws, p, cfg.on) for p in parts)
        accuracies.append(probe_accuracy(train, held, target, seed))
    return {"accuracy": sum(accuracies) / len(accuracies), "on": cfg.on}


def probe_accuracy(
    train: dict[str, torch.Tensor], held: dict[str, torch.Tensor], target: str, seed: int
) -> float:
    """Balanced held-out accuracy of a critic fitted on `train` (domain -> [n, d]), each
    domain weighted equally."""

    def stacked(reps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([r.float().cpu() for r in reps.values()])
        y = torch.cat([torch.full((len(r),), float(n == target)) for n, r in reps.items()])
        return x, y

    (x, y), (hx, hy) = stacked(train), stacked(held)
    weight = torch.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        critic = DomainCritic(x.shape[1])
        opt = torch.optim.Adam(critic.parameters(), lr=PROBE_LR)
        for _ in range(PROBE_STEPS):
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(critic(x, 0.0), y, weight=weight)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return balanced_accuracy(critic(hx, 0.0), hy)
