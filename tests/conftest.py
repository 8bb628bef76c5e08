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

    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        [f"data.raw_dir={movielens_raw}", f"data.prepared_dir={CACHE / 'prepared'}"],
    )
    prepare_domains(cfg)
    return CACHE / "prepared"


@pytest.fixture(scope="session")
def synth_dir() -> Path:
    from distrec.data.synth import SynthSpec, synth_domain

    out = CACHE / "synth"
    synth_domain(
        SynthSpec(
            name="tiny",
            users=300,
            items=80,
            mean_length=12,
            min_length=3,
            users_per_shard=20,
            seed=3,
        ),
        out,
    )
    synth_domain(
        SynthSpec(
            name="tiny-b",
            users=160,
            items=60,
            mean_length=10,
            min_length=3,
            users_per_shard=20,
            seed=4,
        ),
        out,
    )
    return out


def tiny_run_config(
    synth_dir: Path, out: Path, report_to: list[str] | None = None, **sections
) -> dict:
    """A run config over the two tiny synthetic domains with the real MiniLM encoder;
    `report_to`: train.report_to (None: the default, TensorBoard)."""
    cfg = {
        "seed": 0,
        "cache_dir": str(CACHE / "features"),
        "data": {
            "prepared_dir": str(synth_dir),
            "domains": [
                {"name": "tiny", "format": "prepared"},
                {"name": "tiny-b", "format": "prepared"},
            ],
            "sources": ["tiny"],
            "target": "tiny-b",
            "max_history": 12,
            "num_workers": 0,
        },
        "model": {"dim": 32, "user_tower": {"layers": 1, "heads": 2}},
        "stages": {"pretrain": {"epochs": 2}, "adapt": {"epochs": 2}, "id_baseline_epochs": 2},
        "train": {"batch_size": 32, "precision": "fp32"},
        "eval": {"batch_size": 64},
        "output": {"dir": str(out)},
    }
    if report_to is not None:
        cfg["train"]["report_to"] = report_to
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def python() -> str:
    """The interpreter running the suite (the project's venv)."""
    import sys

    return sys.executable
