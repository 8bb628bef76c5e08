"""The `stages`, `train` and `eval` sections: what runs, how it optimizes, how it is scored."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distrec.config.base import Section
from distrec.config.metric_names import MRR_K, parse_metric
from distrec.config.model import check_head_weights

STAGES = ("pretrain", "zero_shot", "adapt")
BASELINES = ("popularity", "id_target_only", "text_target_only")
# train.loss=auto: catalogs above this many items train with the sampled softmax. The full
# softmax's step reaches about twice the sampled one's at 10^4 items (1.5x median, 1.9x
# fastest window) and 47x at 10^5 (perf/results/scale/train.json); below that the exact
# loss is worth its cost.
SAMPLED_ABOVE = 10_000
# eval.catalog=auto: several ranks split catalogs above this many items. Below it one rank's
# copy of the vectors (N x dim floats) is small next to the model, and splitting users
# instead avoids encoding every user on every rank.
SHARD_CATALOG_ABOVE = 200_000


class StageConfig(Section):
    """One training stage's budget."""

    enabled: bool = Field(default=True, description="Run this stage.")
    epochs: int = Field(
        default=5, ge=0, description="Epochs of this stage (upper bound with early stopping)."
    )
    lr: float | None = Field(
        default=None, gt=0.0, description="This stage's learning rate (null = train.lr)."
    )
    train_fraction: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Fraction of users trained on (a fixed hashed subset: few-shot experiments).",
    )


class AdaptConfig(StageConfig):
    """Adaptation to the target domain, after pretraining."""

    mode: Literal["lora", "full", "auto"] = Field(
        default="auto",
        description=(
            "`lora`: a new PEFT adapter per target (+ its ID rows) on the frozen base; `full`: "
            "warm-start fine-tuning of every tower parameter from the pretrained base (the LM stays "
            "frozen in cached mode, gets a merged LoRA end-to-end); `auto`: train both, keep the "
            "one with the better validation eval.metric (both are reported)."
        ),
    )
    heads: dict[str, float] | None = Field(
        default=None,
        description=(
            "The heads (and joint-loss weights) trained on the target: by adapt and by the "
            "target-only baselines, so they are compared on the same task; null = model.heads."
        ),
    )
    id_dropout: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description=(
            "The target's ID-row dropout while adapting (null = model.id_dropout). Pretraining "
            "hides IDs so text carries the transfer; a target with data of its own may lean on "
            "its IDs."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> AdaptConfig:
        if self.heads is not None:
            check_head_weights("stages.adapt.heads", self.heads)
        return self


class StudentConfig(Section):
    """The distilled student's model: an architecture and a smaller shape; every other model
    setting (item encoder, mode, heads, prior) is the run's model section."""

    architecture: str = Field(
        default="id_only",
        description=(
            "A registered architecture (two_tower: text in cached or end-to-end mode as the run's "
            "model.mode; id_only: ID rows only, nothing to encode at serving)."
        ),
    )
    dim: int = Field(default=64, ge=8, description="The student's vector width.")
    layers: int = Field(default=1, ge=1, description="The student's user-tower layers.")
    heads: int = Field(default=1, ge=1, description="The student's user-tower attention heads.")
    dropout: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="The student's user-tower dropout (null = model.user_tower.dropout).",
    )
    score: Literal["cosine", "dot"] | None = Field(
        default=None, description="The student's score function (null = model.score)."
    )
    temperature: float | None = Field(
        default=None, gt=0.0, description="The student's temperature (null = model.temperature)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> StudentConfig:
        if self.dim % self.heads:
            raise ValueError(
                f"stages.distill.student.dim={self.dim} is not divisible by heads={self.heads}"
            )
        return self


class DistillConfig(StageConfig):
    """Knowledge distillation on the target: a finished stage's model (the teacher) taught
    to a smaller student; loss = the target heads' loss + alpha * T^2 * KL(teacher || student)
    over the next-item softmax of the candidates (or the teacher's top_k of them)."""

    enabled: bool = Field(default=False, description="Run the distillation stage.")
    epochs: int = Field(
        default=30, ge=0, description="Epochs of the student (upper bound with early stopping)."
    )
    teacher: Literal["adapt", "adapt_lora", "adapt_full"] = Field(
        default="adapt",
        description="The stage of this run whose exported model teaches (it must run first).",
    )
    student: StudentConfig = Field(default=StudentConfig(), description="The student's model.")
    alpha: float = Field(
        default=1.0, gt=0.0, description="Weight of the distillation term in the student's loss."
    )
    temperature: float = Field(
        default=2.0, gt=0.0, description="Softmax temperature T of both distributions in the KL."
    )
    top_k: int | None = Field(
        default=None,
        ge=2,
        description=(
            "Match only the teacher's top_k candidates per position (both distributions "
            "renormalised over them), for large catalogs; null = every candidate."
        ),
    )
    cache_teacher: bool = Field(
        default=False,
        description=(
            "Keep the teacher's encoded catalog (item vectors and bias: an LM forward per item "
            "end to end) on disk under <output.dir>/distill/, keyed by the teacher's weights, so "
            "a resumed or repeated stage does not encode it again. Per-position teacher logits "
            "are always computed on the fly: each epoch's windows differ (data.train_window)."
        ),
    )
    control: bool = Field(
        default=True,
        description=(
            "Also train the same student without the teacher (stage distill_alone), on the same "
            "split, so the report shows what distillation adds."
        ),
    )


class StagesConfig(Section):
    """Which stages and baselines run, in the order pretrain, zero_shot, adapt, baselines."""

    pretrain: StageConfig = Field(default=StageConfig(), description="Pretraining on data.sources.")
    zero_shot: bool = Field(
        default=True, description="Evaluate the pretrained model on the target without training."
    )
    adapt: AdaptConfig = Field(default=AdaptConfig(), description="Adaptation to data.target.")
    distill: DistillConfig = Field(
        default=DistillConfig(),
        description="Knowledge distillation of an adapted model into a smaller student.",
    )
    baselines: list[Literal["popularity", "id_target_only", "text_target_only", "rating_means"]] = (
        Field(default=list(BASELINES), description="Baselines trained and evaluated on the target.")
    )
    # The ID baseline's own knobs exist so it is tuned, not crippled (reported in report.md).
    id_baseline_lr: float = Field(
        default=1e-3, gt=0.0, description="Learning rate of the SASRec-style ID baseline."
    )
    id_baseline_dropout: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Dropout of the SASRec-style ID baseline."
    )
    id_baseline_epochs: int = Field(
        default=30, ge=1, description="Epoch budget of the ID baseline (early stopping applies)."
    )
    id_baseline_score: Literal["cosine", "dot"] | None = Field(
        default=None,
        description=(
            "The ID baseline's score function (null = model.score): an ID model's best scoring "
            "is not the text model's (perf/results/tune_id_baseline)."
        ),
    )
    id_baseline_temperature: float | None = Field(
        default=None,
        gt=0.0,
        description="The ID baseline's temperature (null = model.temperature).",
    )
    text_baseline_epochs: int = Field(
        default=30,
        ge=1,
        description=(
            "Epoch budget of the target-only text model, which also trains to convergence "
            "(early stopping), not for the pretraining budget."
        ),
    )
    extra: list[str] = Field(
        default=[],
        description=(
            "Registered stages (distrec.train.stages registry) to run after the built-in ones, "
            "in this order; each writes its own stage records."
        ),
    )


class TrainConfig(Section):
    """Optimization shared by every stage."""

    batch_size: int = Field(
        default=64, ge=1, description="Users per batch per process (per micro-step)."
    )
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(default=1e-3, gt=0.0, description="Peak learning rate (stages may override).")
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="Fraction of a stage's steps spent warming up."
    )
    max_grad_norm: float | None = Field(
        default=1.0, gt=0.0, description="Gradient-norm clipping (null = no clipping)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="Compute precision; `auto` = bf16 where the hardware has it."
    )
    early_stopping_patience: int = Field(
        default=3,
        ge=1,
        description=(
            "Early stopping on eval.metric (validation split), checked at every epoch end: stop "
            "after this many evaluations without an improvement larger than min_delta."
        ),
    )
    early_stopping_min_delta: float = Field(
        default=0.0, ge=0.0, description="The smallest eval.metric gain that counts as improvement."
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description=(
            "An optimizer-step budget per training stage instead of epochs: the stage trains until "
            "this many steps (or early stopping), however many epochs that takes."
        ),
    )
    checkpoint_every_steps: int | None = Field(
        default=None,
        ge=1,
        description=(
            "A mid-epoch checkpoint every N optimizer steps (epoch ends always get one); what a "
            "crash can cost. null: epoch ends only."
        ),
    )
    loss: Literal["auto", "full", "sampled"] = Field(
        default="auto",
        description=(
            "Cached mode's retrieval loss: `full` = softmax over the whole catalog (every item "
            "encoded every step); `sampled` = softmax over the batch's own items plus "
            "`num_negatives` shared negatives, logQ-corrected (model.logq_correction), so a step "
            "costs the same at any catalog size; `auto` = sampled above "
            f"{SAMPLED_ABOVE:,} items (perf/results/scale/train.json: where a full-softmax "
            "step reaches twice a sampled one). End-to-end mode always samples: its "
            "candidates are the batch's items."
        ),
    )
    num_negatives: int = Field(
        default=1024,
        ge=1,
        description=(
            "`loss: sampled`: negatives drawn per batch (with replacement, shared by every row "
            "of the batch, as in industrial two-tower training) on top of the batch's own items."
        ),
    )
    negative_sampling: Literal["uniform", "popularity"] = Field(
        default="popularity",
        description=(
            "`loss: sampled`: draw negatives uniformly from the catalog or in proportion to "
            "their training share (popular items are the hard negatives a softmax needs); the "
            "logQ correction removes the sampling bias either way."
        ),
    )
    frozen_lm_storage: Literal["auto", "fp32"] = Field(
        default="auto",
        description=(
            "End-to-end mode: `auto` stores the frozen LM weights in bf16 when the precision is "
            "bf16 and the backend leaves storage to distrec (single process, DDP; the sharding "
            "backends manage their own), so autocast stops re-casting them every call (LoRA weights "
            "and optimizer state stay fp32; the LM is back in fp32 before LoRA is merged); "
            "`fp32` keeps them in fp32 (the cost: perf/results/cpu/step_options.md)."
        ),
    )
    compile: bool = Field(
        default=False,
        description=(
            "Run the item tower's LM and the user tower through `torch.compile` (dynamic shapes, "
            "inductor) while training; the typed-request model stays eager. Where a backend "
            "refuses (no C++ compiler, an unsupported sharding...), one log line names the "
            "reason and training continues eager. Measure before turning it on "
            "(perf/step_options.py): MiniLM at batch 64 on 2 CPU cores stepped 0.8x as fast "
            "with half the peak memory; a tiny LM, 3.5x as fast."
        ),
    )
    log_every: int = Field(default=20, ge=1, description="Log training progress every N steps.")
    threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Torch intra-op threads per process (null = torch's default). Float sums, and so "
            "metrics, change with it; `distrec tune` pins it so best.yaml retrains identically."
        ),
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "aim"]] = Field(
        default=["tensorboard"],
        description=(
            "Experiment trackers the step losses, epoch metrics and this config go to (rank 0; "
            "[] = none), each writing into output.dir unless its environment says otherwise "
            "(README, Tracking); wandb, mlflow: pip install 'distrec[trackers]'."
        ),
    )
    tracker_project: str = Field(
        default="distrec",
        description="The wandb project, MLflow and Aim experiment; runs are named after output.dir.",
    )

    @model_validator(mode="after")
    def _trackers(self) -> TrainConfig:
        if len(set(self.report_to)) != len(self.report_to):
            raise ValueError(f"train.report_to={self.report_to}: a tracker is named twice")
        return self


class EvalConfig(Section):
    """Full-catalog ranking evaluation."""

    ks: list[int] = Field(default=[10, 20, 50], description="Cut-offs K of recall@K and ndcg@K.")
    batch_size: int = Field(default=256, ge=1, description="Users scored at once.")
    metric: str = Field(
        default="ndcg@10",
        description=(
            "The validation metric that selects checkpoints, early-stops and picks adapt.mode=auto: "
            "recall@K or ndcg@K with K in ks, mrr@10, or a head's metric (rmse, mae, auc, gauc, "
            "logloss, accuracy, macro_f1: the head must be trained in every stage; rmse, mae and "
            "logloss are minimised)."
        ),
    )
    max_users: int | None = Field(
        default=None, ge=1, description="Evaluate at most this many users per split (null = all)."
    )
    catalog: Literal["auto", "replicated", "sharded"] = Field(
        default="auto",
        description=(
            "How ranks share the catalog when evaluating and recommending: `replicated` = "
            "every rank holds every item vector and ranks its own users; `sharded` = each rank "
            "holds and scores only its blocks of the catalog (eval.catalog_block items each) for "
            "every user, and ranks are combined from per-block counts and top-k merges (same "
            "metrics, per-rank memory / world); `auto` = sharded on several ranks above "
            f"{SHARD_CATALOG_ABOVE:,} items."
        ),
    )
    catalog_block: int = Field(
        default=65_536,
        ge=1,
        description=(
            "Catalog rows scored at once (bounds the users x items score matrix); also the unit "
            "of eval.catalog=sharded's split of the catalog across ranks."
        ),
    )
    ctr_negatives: int = Field(
        default=20,
        ge=1,
        description=(
            "CTR metrics (AUC, GAUC, logloss): sampled items scored beside each held-out item, "
            "drawn once per user from outside their history (seeded by `seed`), so every stage "
            "and baseline is judged on the same negatives."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        try:
            kind, k = parse_metric(self.metric)
        except ValueError:
            raise ValueError(
                f"eval.metric={self.metric!r}: expected recall@K, ndcg@K or mrr@K (e.g. ndcg@10), "
                "or a head's metric name (e.g. rmse)"
            ) from None
        # A head's metric (no K) is checked against the run's heads when it starts.
        if kind == "mrr" and k != MRR_K:
            raise ValueError(f"eval.metric={self.metric!r}: MRR is reported at K={MRR_K} only")
        if kind in ("ndcg", "recall") and k not in self.ks:
            raise ValueError(f"eval.metric={self.metric!r}: K={k} is not in eval.ks={self.ks}")
        if any(k <= 0 for k in self.ks):
            raise ValueError(f"eval.ks={self.ks}: every K must be positive")
        return self
