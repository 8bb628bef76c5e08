import torch

from distrec.models.features import cached_catalog_features, feature_key


def test_feature_cache_is_keyed_by_catalog_and_never_reuses_stale_rows(tmp_path):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.tensor([[float(len(t))] for t in texts])

    key = feature_key("m", "mean", "{title}", "catalog-sha-1", 32)
    first = cached_catalog_features(key, tmp_path, ["a", "bb"], encode)
    assert first[:, 0].tolist() == [0.0, 1.0, 2.0]  # row 0 is padding
    again = cached_catalog_features(key, tmp_path, ["a", "bb"], encode)
    assert torch.equal(again, first) and len(calls) == 1  # cache hit
    # the catalog changed: another key, so the features are computed afresh
    other = feature_key("m", "mean", "{title}", "catalog-sha-2", 32)
    assert other != key
    assert cached_catalog_features(other, tmp_path, ["a", "bb", "ccc"], encode)[:, 0].tolist() == [
        0,
        1,
        2,
        3,
    ]
    # a cache file whose rows do not match the catalog is recomputed, not reused
    assert cached_catalog_features(key, tmp_path, ["a", "bb", "ccc"], encode).shape[0] == 4
    assert len(calls) == 3
