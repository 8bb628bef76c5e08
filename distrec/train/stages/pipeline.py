"""`Pipeline`: what the stages of one run share, and the helpers every stage uses."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch import nn

from distrec.config.schema import ModelConfig
from distrec.distributed.collectives import barrier
from distrec.distributed.unshard import with_whole_weights
from distrec.eval.evaluate import UserRanks
from distrec.heads.base import head_modules
from distrec.models.registry import ModelSpec, build_model
from distrec.train.evaluation import Evaluator, HeadResults, domain_metrics, mean_metrics
from distrec.train.outputs import write_stage_heads, write_stage_ranks
from distrec.train.state import FitResult
from distrec.train.trainer import StagePlan, Trainer, TrainHook
from distrec.train.workspace import Workspace, write_json
from distrec.utils.progress import log

# (domain, split) -> every user's rank, and the heads' own results on that split (or the
# ranks alone, for a stage that only ranks).
RankFn = Callable[[str, str], tuple[UserRanks, HeadResults] | UserRanks]


class StageResults:
    """Finished stages' records, persisted after each stage (rank 0) so a resumed run skips them."""

    def __init__(self, ws: Workspace) -> None:
        self.ws, self.path = ws, ws.out / "stages.json"
        self.stages: dict[str, dict] = {}
        if ws.resume and self.path.exists():
            self.stages = json.loads(self.path.read_text())
            log(f"resuming: finished stages {list(self.stages)} are kept")

    def __contains__(self, stage: str) -> bool:
        return stage in self.stages

    def __getitem__(self, stage: str) -> dict:
        return self.stages[stage]

    def __setitem__(self, stage: str, record: dict) -> None:
        self.stages[stage] = record
        if self.ws.is_main:
            write_json(self.path, self.stages)
        barrier()


def base_weights(out: Path) -> Path:
    """The pretrained base every adapter of a run belongs to."""
    return out / "export" / "base" / "model.safetensors"


def new_model(
    ws: Workspace,
    architecture: str | None = None,
    *,
    cfg: ModelConfig | None = None,
    dropout: float | None = None,
) -> nn.Module:
    """A fresh model (seeded by the run's seed) of `architecture` (default model.architecture),
    built from `cfg` (default the run's model config), with the modules of every head the
    run trains (`run_heads`)."""
    set_seed(ws.cfg.seed)
    cfg = cfg or ws.cfg.model
    architecture = architecture or cfg.architecture
    lm = ws.text.lm if (ws.text is not None and cfg.mode == "end_to_end") else None
    if lm is not None:
        for p in lm.parameters():
            p.requires_grad_(False)
    items = {n: d.num_items for n, d in ws.domains.items()}
    with torch.random.fork_rng(devices=[]):  # the towers start the same with or without heads
        torch.manual_seed(ws.cfg.seed + 1)
        heads = head_modules(ws.cfg.model_copy(update={"model": cfg}))
    spec = ModelSpec(
        cfg, items, ws.cfg.data.max_history, ws.feature_dim, lm, dropout, heads, ws.graph
    )
    return build_model(architecture, spec)


def load_base(ws: Workspace) -> nn.Module:
    """The run's pretrained base, rebuilt and read from export/base/."""
    # Resumed after pretraining under ZeRO-3, the LM is still partitioned as loaded.
    return with_whole_weights(new_model(ws), str(base_weights(ws.out)))


def ranks_and_head_results(
    result: UserRanks | tuple[UserRanks, HeadResults],
) -> tuple[UserRanks, HeadResults]:
    """A RankFn's result as (ranks, head results): a stage that ranks only may return the
    UserRanks alone."""
    return result if isinstance(result, tuple) else (result, HeadResults())


class Pipeline:
    """The workspace, the finished stages' records, the pretrained base and run-wide hooks."""

    def __init__(self, ws: Workspace, hooks: Sequence[TrainHook] = ()) -> None:
        self.ws, self.hooks = ws, list(hooks)
        self.results = StageResults(ws)
        self.evaluator = Evaluator(ws)
        self._base: nn.Module | None = None

    @property
    def base(self) -> nn.Module:
        """The pretrained model: trained in this process, or read back from its export."""
        if self._base is None:
            self._base = load_base(self.ws)
        return self._base

    @base.setter
    def base(self, model: nn.Module) -> None:
        """Keep the model the pretrain stage just trained (no read-back from the export)."""
        self._base = model

    def train(
        self, model: nn.Module, plan: StagePlan, hooks: Sequence[TrainHook] = ()
    ) -> tuple[nn.Module, FitResult]:
        """Fit `model` on `plan` with the run's hooks plus `hooks`."""
        return Trainer(self.ws, model, plan, [*hooks, *self.hooks]).fit()

    def record(self, model: nn.Module, plan: StagePlan, fitted: FitResult | None) -> dict:
        """Valid and test metrics of the stage's model (mean over its domains); every user's
        rank goes to ranks/<stage>.parquet so runs and stages compare user by user."""

        heads = list(plan.head_weights(self.ws.cfg))

        def ranks(name: str, split: str) -> tuple[UserRanks, HeadResults]:
            return self.evaluator.evaluate(model, self.ws.domains[name], split, heads, lists=True)

        record = self.ranked_record(plan.name, plan.eval_domains, ranks)
        if fitted is not None:
            record.update(asdict(fitted))
        log(
            f"{plan.name}: test ndcg@10 {record['test']['ndcg@10']:.4f}  "
            f"valid {record['valid']['ndcg@10']:.4f}"
        )
        return record

    def ranked_record(self, stage: str, domains: list[str], ranks: RankFn) -> dict:
        """{domains, valid, test} from `ranks(domain, split)` (ranks and head metrics), ranks
        saved (rank 0)."""
        record: dict = {"domains": domains}
        found: dict[tuple[str, str], UserRanks] = {}
        per_user: dict[tuple[str, str], dict] = {}
        for split in ("valid", "test"):
            per_domain = []
            for name in domains:
                found[name, split], head = ranks_and_head_results(ranks(name, split))
                d, ks = self.ws.domains[name], self.ws.cfg.eval.ks
                per_domain.append({**domain_metrics(found[name, split], d, ks), **head.metrics})
                if head.per_user:
                    per_user[name, split] = head.per_user
            record[split] = mean_metrics(per_domain)
        if self.ws.is_main:
            write_stage_ranks(self.ws.out, stage, found)
            if per_user:
                write_stage_heads(self.ws.out, stage, per_user)
        return record
