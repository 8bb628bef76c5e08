"""Fixtures shared by the multi-process tests."""

from __future__ import annotations

import pytest

from distrec.data.synth import SynthSpec, synth_domain
from tests.conftest import CACHE

# 16 shards x 20 users, batch 16: 8 shards and 10 full batches per reader.
EVEN = dict(users=320, items=60, mean_length=10, min_length=3, users_per_shard=20, seed=5)


@pytest.fixture(scope="session")
def even_dir():
    out = CACHE / "synth"
    synth_domain(SynthSpec(name="even", **EVEN), out)
    return out


@pytest.fixture(scope="session")
def rated_even_dir():
    """The `even` domain's shape with planted ratings (heads parity)."""
    out = CACHE / "synth"
    synth_domain(SynthSpec(name="even-rated", ratings=True, **EVEN), out)
    return out


@pytest.fixture(scope="session")
def even_pair_dir():
    """`even` as the source and a second domain of its shape as the target (transfer)."""
    out = CACHE / "synth"
    synth_domain(SynthSpec(name="even", **EVEN), out)
    synth_domain(SynthSpec(name="even-tgt", **{**EVEN, "seed": 6}), out)
    return out


@pytest.fixture(scope="session")
def target_dir(even_dir):
    """`even` plus a small target domain `even-b`: 8 shards x 20 users, batch 16: 4 shards
    and 5 full batches per reader."""
    synth_domain(
        SynthSpec(
            name="even-b",
            users=160,
            items=40,
            mean_length=8,
            min_length=3,
            users_per_shard=20,
            seed=6,
        ),
        CACHE / "synth",
    )
    return even_dir
