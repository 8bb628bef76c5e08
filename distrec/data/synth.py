"""`distrec data synth`: synthetic domains at any scale, through the same writer as prepare.

Popularity follows a Zipf law, history lengths a shifted geometric law, and item
text is drawn from a fixed vocabulary so the LM has real tokens to encode.

A planted sequential rule (`rule` > 0) makes each next item, with that
probability, the successor of the previous item along a fixed chain through the
catalog: structure a sequential model must find and popularity cannot. Two
domains with the same `catalog_seed` share item texts and the chain (but not
users or ID tables), so the rule can only transfer from one to the other through
the items' text: the quality tests' source/target pair.

Generated item features (`feature_dim` > 0) stand in for LM features at scales where
encoding every item text with the LM would take hours: a seeded Gaussian mixture with
one component per genre, unit-normed like pooled sentence embeddings, so items of a
genre lie near each other and every item is still its own point. They are drawn from
`catalog_seed` too, so domains sharing a catalog share their items' features.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distrec.data.shards import UserSequence
from distrec.data.writer import DomainDataset, existing_is_current, write_domain
from distrec.utils.hashing import sha256_json
from distrec.utils.progress import log, progress

VOCAB = [
    "action",
    "adventure",
    "animated",
    "classic",
    "comedy",
    "crime",
    "dark",
    "documentary",
    "drama",
    "epic",
    "family",
    "fantasy",
    "gritty",
    "heist",
    "historical",
    "horror",
    "indie",
    "journey",
    "love",
    "musical",
    "mystery",
    "noir",
    "quiet",
    "romance",
    "satire",
    "science",
    "fiction",
    "space",
    "sports",
    "spy",
    "story",
    "thriller",
    "tragic",
    "true",
    "war",
    "western",
    "wild",
    "winter",
    "young",
]
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Documentary")


@dataclass(frozen=True)
class SynthSpec:
    """A synthetic domain: sizes, length and popularity laws, seeds and the planted rule."""

    name: str = "synth"
    users: int = 10_000
    items: int = 5_000
    mean_length: float = 30.0
    min_length: int = 5
    zipf: float = 1.1
    seed: int = 0
    users_per_shard: int = 1000
    rule: float = 0.0  # probability that the next item is the previous one's successor
    catalog_seed: int | None = None  # item texts and chain; None = seed
    ratings: bool = False  # planted 1-5 ratings: user bias + item bias + genre taste + noise
    feature_dim: int = (
        0  # generated item features [items, feature_dim] instead of LM ones; 0 = none
    )

    def fingerprint(self) -> str:
        """Hash of the spec; the rule, rating and feature fields enter only when set, so
        domains made before they existed stay current."""
        spec = asdict(self)
        defaults = (("rule", 0.0), ("catalog_seed", None), ("ratings", False), ("feature_dim", 0))
        for key, default in defaults:
            if spec[key] == default:
                del spec[key]
        return sha256_json({"synth": spec})

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1:
            raise ValueError(f"synth: users={self.users}, items={self.items}: both must be >= 1")
        if self.mean_length < self.min_length:
            raise ValueError(
                f"synth: mean_length={self.mean_length} < min_length={self.min_length}"
            )
        if self.zipf <= 0:
            raise ValueError(f"synth: zipf={self.zipf} must be > 0")
        if not 0.0 <= self.rule < 1.0:
            raise ValueError(f"synth: rule={self.rule} must be in [0, 1)")
        if self.feature_dim < 0:
            raise ValueError(f"synth: feature_dim={self.feature_dim} must be >= 0 (0 = none)")


def synth_domain(spec: SynthSpec, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the domain `spec` describes into `out_dir/<name>`; returns its manifest path."""
    root = Path(out_dir) / spec.name
    fingerprint = spec.fingerprint()
    if existing_is_current(root, fingerprint, overwrite):
        log(f"{spec.name}: {root} is up to date")
        return root / "manifest.json"
    catalog_seed = spec.seed if spec.catalog_seed is None else spec.catalog_seed
    rng = np.random.default_rng(catalog_seed)
    catalog = _catalog(spec, rng)
    # Its own generator: drawing the chain from `rng` would shift the lengths drawn next,
    # changing every domain made before the rule existed under the same fingerprint.
    chain = np.random.default_rng([catalog_seed, 0xC4A1]).permutation(spec.items)
    successor = np.empty(spec.items, dtype=np.int64)
    successor[chain] = np.roll(chain, -1)
    popularity = 1.0 / np.arange(1, spec.items + 1) ** spec.zipf
    popularity /= popularity.sum()
    lengths = (
        spec.min_length
        + rng.geometric(1.0 / max(1.0, spec.mean_length - spec.min_length + 1), size=spec.users)
        - 1
    )
    counts = {
        "users": spec.users,
        "items": spec.items,
        "interactions": int(lengths.sum()),
        "eval_users": int((lengths >= 3).sum()),
        "train_only_users": int((lengths < 3).sum()),
    }
    sequences = _sequences(
        spec, lengths, popularity, successor, np.random.default_rng(spec.seed + 1)
    )
    if spec.ratings:
        sequences = _rated(sequences, catalog, np.random.default_rng([spec.seed, 0x5A7E]))
    features = None
    if spec.feature_dim:
        genres = catalog["field.genre"].tolist()
        features = generated_features(genres, spec.feature_dim, catalog_seed)
    dataset = DomainDataset(
        domain=spec.name,
        fingerprint=fingerprint,
        catalog=catalog,
        sequences=progress(sequences, f"{spec.name}: synth users", total=spec.users),
        counts=counts,
        extra={
            "synth": asdict(spec),
            "template": "{title}. Genres: {genre}",
            "text_fields": ["title", "genre"],
            "has_ratings": spec.ratings,
        },
        features=features,
    )
    return write_domain(root, dataset, users_per_shard=spec.users_per_shard)


def _rated(
    sequences: Iterator[UserSequence], catalog: pd.DataFrame, rng: np.random.Generator
) -> Iterator[UserSequence]:
    """The planted ratings: round(3 + user bias + item bias + the user's taste for the item's
    genre + noise), clipped to 1-5. An item's mean rating knows only its bias; a user's
    past ratings reveal the rest, which is what a rating head must beat item-mean with."""
    genres = catalog["field.genre"].map({g: i for i, g in enumerate(GENRES)}).to_numpy()
    item_bias = rng.normal(0.0, 0.6, size=len(catalog))
    for seq in sequences:
        user_bias, taste = rng.normal(0.0, 0.7), rng.normal(0.0, 0.6, size=len(GENRES))
        items = np.asarray(seq.items) - 1
        raw = 3.0 + user_bias + item_bias[items] + taste[genres[items]]
        raw = raw + rng.normal(0.0, 0.4, size=len(items))
        seq.ratings = np.clip(np.round(raw), 1, 5).astype(float).tolist()
        yield seq


ITEM_SPREAD = 1.0  # per-coordinate std of an item around its genre's centre (centres: 1)
FEATURE_CHUNK = 1 << 16  # rows drawn at once: 10^6 items never hold a float64 copy


def generated_features(genres: list[str], dim: int, seed: int) -> np.ndarray:
    """[len(genres), dim] float32 unit vectors: the genre's centre plus per-item noise
    (ITEM_SPREAD), from its own generator so the rest of the domain is unchanged."""
    rng = np.random.default_rng([seed, 0xFEA7])
    centres = rng.standard_normal((len(GENRES), dim), dtype=np.float32)
    index = {g: i for i, g in enumerate(GENRES)}
    codes = np.array([index[g] for g in genres], dtype=np.int64)
    out = np.empty((len(genres), dim), dtype=np.float32)
    for start in range(0, len(genres), FEATURE_CHUNK):
        rows = codes[start : start + FEATURE_CHUNK]
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32)
        block = centres[rows] + np.float32(ITEM_SPREAD) * noise
        out[start : start + len(rows)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _catalog(spec: SynthSpec, rng: np.random.Generator) -> pd.DataFrame:
    words = rng.integers(0, len(VOCAB), size=(spec.items, 4))
    titles = [" ".join(VOCAB[w] for w in row).title() for row in words]
    genres = [GENRES[g] for g in rng.integers(0, len(GENRES), size=spec.items)]
    ids = [f"item-{i}" for i in range(spec.items)]
    return pd.DataFrame(
        {
            "item_index": np.arange(1, spec.items + 1, dtype=np.int64),
            "item_id": ids,
            "text": [f"{t}. Genres: {g}" for t, g in zip(titles, genres, strict=True)],
            "field.title": titles,
            "field.genre": genres,
        }
    )


def _sequences(
    spec: SynthSpec,
    lengths: np.ndarray,
    popularity: np.ndarray,
    successor: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[UserSequence]:
    for u, n in enumerate(lengths):
        items = rng.choice(spec.items, size=int(n), p=popularity)
        if spec.rule > 0:
            follows = rng.random(int(n)) < spec.rule
            for t in range(1, int(n)):
                if follows[t]:
                    items[t] = successor[items[t - 1]]
        items = items + 1
        yield UserSequence(
            index=u,
            user=f"user-{u}",
            items=items.tolist(),
            timestamps=np.arange(int(n), dtype=np.float64).tolist(),
        )
