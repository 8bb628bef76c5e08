"""Shared fixtures: the real MovieLens files are fetched once and cached for the suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("DISTREC_TEST_CACHE", ROOT / ".cache" / "test-data"))


@pytest.fixture(scope="session")
def movielens_raw() -> Path:
    from distrec.data.fetch import fetch_movielens

    return fetch_movielens(CACHE / "raw")


@pytest.fixture(scope="session")
def prepared_dir(movielens_raw: Path) -> Path:
    """ML-1M and ML-100K prepared with the demo settings (cached between runs)."""
    from distrec.config import load_config
    from distrec.data.prepare import prepare_domains

    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      [f"data.raw_dir={movielens_raw}", f"data.prepared_dir={CACHE / 'prepared'}"])
    prepare_domains(cfg)
    return CACHE / "prepared"


@pytest.fixture(scope="session")
def synth_dir() -> Path:
    from distrec.data.synth import SynthSpec, synth_domain

    out = CACHE / "synth"
    synth_domain(SynthSpec(name="tiny", users=300, items=80, mean_length=12, min_length=3,
                           users_per_shard=20, seed=3), out)
    return out


def python() -> str:
    """The interpreter running the suite (the project's venv)."""
    import sys

    return sys.executable
