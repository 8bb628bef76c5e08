"""`distrec data synth`: synthetic domains at any scale, through the same writer as prepare.

Popularity follows a Zipf law, history lengths a shifted geometric law, and item
text is drawn from a fixed vocabulary so the LM has real tokens to encode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distrec.data.shards import UserSequence
from distrec.data.writer import existing_is_current, write_domain
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
    name: str = "synth"
    users: int = 10_000
    items: int = 5_000
    mean_length: float = 30.0
    min_length: int = 5
    zipf: float = 1.1
    seed: int = 0
    users_per_shard: int = 1000

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1:
            raise ValueError(f"synth: users={self.users}, items={self.items}: both must be >= 1")
        if self.mean_length < self.min_length:
            raise ValueError(
                f"synth: mean_length={self.mean_length} < min_length={self.min_length}"
            )
        if self.zipf <= 0:
            raise ValueError(f"synth: zipf={self.zipf} must be > 0")


def synth_domain(spec: SynthSpec, out_dir: str | Path, overwrite: bool = False) -> Path:
    root = Path(out_dir) / spec.name
    fingerprint = sha256_json({"synth": asdict(spec)})
    if existing_is_current(root, fingerprint, overwrite):
        log(f"{spec.name}: {root} is up to date")
        return root / "manifest.json"
    rng = np.random.default_rng(spec.seed)
    catalog = _catalog(spec, rng)
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
    sequences = _sequences(spec, lengths, popularity, np.random.default_rng(spec.seed + 1))
    return write_domain(
        root,
        domain=spec.name,
        fingerprint=fingerprint,
        catalog=catalog,
        sequences=progress(sequences, f"{spec.name}: synth users", total=spec.users),
        users_per_shard=spec.users_per_shard,
        counts=counts,
        extra={
            "synth": asdict(spec),
            "template": "{title}. Genres: {genre}",
            "text_fields": ["title", "genre"],
            "has_ratings": False,
        },
    )


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
    spec: SynthSpec, lengths: np.ndarray, popularity: np.ndarray, rng: np.random.Generator
) -> Iterator[UserSequence]:
    for u, n in enumerate(lengths):
        items = rng.choice(spec.items, size=int(n), p=popularity) + 1
        yield UserSequence(
            index=u,
            user=f"user-{u}",
            items=items.tolist(),
            timestamps=np.arange(int(n), dtype=np.float64).tolist(),
        )
