"""`distrec data synth --feature-dim`: generated item features written with the domain."""

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from distrec.cli import main
from distrec.data.inspect import inspect_manifest
from distrec.data.manifest import load_manifest
from distrec.data.synth import GENRES, SynthSpec, synth_domain
from distrec.utils.hashing import sha256_json

SPEC = dict(name="feat", users=40, items=50, mean_length=6, min_length=3, users_per_shard=10)


def features(root) -> np.ndarray:
    return load_file(str(load_manifest(root).features_path))["features"]


def test_feature_dim_writes_a_deterministic_unit_norm_matrix_recorded_in_the_manifest(tmp_path):
    spec = SynthSpec(feature_dim=16, seed=2, **SPEC)
    synth_domain(spec, tmp_path / "a")
    synth_domain(spec, tmp_path / "b")
    a, b = features(tmp_path / "a" / "feat"), features(tmp_path / "b" / "feat")
    assert a.dtype == np.float32 and a.shape == (50, 16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    m = load_manifest(tmp_path / "a" / "feat")
    assert m.feature_dim == 16 and m.data["features"]["source"] == "generated"
    assert inspect_manifest(m.root)[1]
    other = synth_domain(SynthSpec(feature_dim=16, seed=3, **SPEC), tmp_path / "c")
    assert not np.array_equal(features(other.parent), a)


def test_the_features_carry_the_genres(tmp_path):
    root = synth_domain(SynthSpec(feature_dim=32, **SPEC | {"items": 400}), tmp_path).parent
    x = features(root)
    g = pd.read_parquet(load_manifest(root).catalog_path)["field.genre"].to_numpy()
    sims = x @ x.T
    same = g[:, None] == g[None, :]
    off_diagonal = ~np.eye(len(g), dtype=bool)
    # Same-genre items are closer than items of different genres, yet each is its own point.
    assert sims[same & off_diagonal].mean() > sims[~same].mean() + 0.3
    assert sims[off_diagonal].max() < 0.99
    assert set(g) <= set(GENRES)


def test_feature_dim_changes_the_fingerprint_and_only_when_set(tmp_path):
    plain, featured = SynthSpec(**SPEC), SynthSpec(feature_dim=8, **SPEC)
    assert plain.fingerprint() != featured.fingerprint()
    assert featured.fingerprint() != SynthSpec(feature_dim=16, **SPEC).fingerprint()
    # A domain made before the option existed keeps its fingerprint (and has no features).
    legacy = asdict(plain)
    for key in ("rule", "catalog_seed", "ratings", "feature_dim"):
        legacy.pop(key)
    assert plain.fingerprint() == sha256_json({"synth": legacy})
    root = synth_domain(plain, tmp_path).parent
    assert load_manifest(root).features_path is None
    assert "features" not in json.loads((root / "manifest.json").read_text())
    # Other data is unchanged by the option: the sequences and catalog are the same.
    synth_domain(featured, tmp_path / "f")
    a, b = load_manifest(root), load_manifest(tmp_path / "f" / "feat")
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    assert a.data["catalog"]["sha256"] == b.data["catalog"]["sha256"]


def test_inspect_catches_modified_features(tmp_path):
    root = synth_domain(SynthSpec(feature_dim=4, **SPEC), tmp_path).parent
    (root / "features.safetensors").write_bytes(b"corrupt")
    report, ok = inspect_manifest(root)
    assert not ok and "features.safetensors: sha256 mismatch" in report


def test_cli_feature_dim(tmp_path, capsys):
    argv = ["data", "synth", "--name", "cli", "--users", "20", "--items", "30"]
    assert main([*argv, "--out", str(tmp_path), "--feature-dim", "12"]) == 0
    assert load_manifest(tmp_path / "cli").feature_dim == 12
    with pytest.raises(ValueError, match="feature_dim=-1 must be >= 0"):
        SynthSpec(feature_dim=-1)
