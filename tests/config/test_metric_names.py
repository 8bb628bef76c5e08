import pytest

from distrec.config import ConfigError, config_from_dict
from distrec.config.metric_names import MetricName, parse_metric


@pytest.mark.parametrize(
    ("name", "kind", "k"),
    [("ndcg@10", "ndcg", 10), ("recall@50", "recall", 50), ("mrr@5", "mrr", 5)],
)
def test_metric_names_parse_to_kind_and_k(name, kind, k):
    parsed = parse_metric(name)
    assert parsed == MetricName(kind, k) and parsed == (kind, k) and str(parsed) == name


@pytest.mark.parametrize(
    "name", ["ndcg", "ndcg@", "ndcg@0", "hit@10", "NDCG@10", "ndcg@10 ", "@10"]
)
def test_bad_metric_names_are_refused_with_the_accepted_form(name):
    with pytest.raises(
        ValueError, match=r"expected <kind>@<k> with kind in \['ndcg', 'recall', 'mrr'\]"
    ):
        parse_metric(name)


def test_eval_metric_keeps_its_message():
    with pytest.raises(
        ConfigError, match=r"eval\.metric='hit@10': expected recall@K, ndcg@K or mrr@K"
    ):
        config_from_dict({"eval": {"metric": "hit@10"}})
    assert config_from_dict({"eval": {"metric": "mrr@10"}}).eval.metric == "mrr@10"


@pytest.mark.parametrize("metric", ["ndcg@10", "valid.hit@10", "valid.ndcg@0", "test.ndcg@10"])
def test_tune_metric_must_be_a_validation_metric(metric):
    with pytest.raises(ConfigError, match=rf"tune\.metric='{metric}': expected valid\.<metric>"):
        config_from_dict({"tune": {"metric": metric}})


def test_tune_metric_accepts_every_kind():
    for metric in ("valid.ndcg@20", "valid.recall@10", "valid.mrr@10"):
        assert config_from_dict({"tune": {"metric": metric}}).tune.metric == metric


def test_bootstrap_uses_the_same_parser():
    from distrec.eval import bootstrap

    assert bootstrap.parse_metric is parse_metric


def test_only_metrics_evaluation_reports_are_accepted():
    """mrr is reported at 10 only: mrr@20 would pass a name check and fail after epoch 1."""
    import torch

    from distrec.config.metric_names import reported_metrics
    from distrec.eval.metrics import metrics_from_ranks

    with pytest.raises(ConfigError, match=r"eval.metric='mrr@20': MRR is reported at K=10 only"):
        config_from_dict({"eval": {"metric": "mrr@20"}})
    emitted = set(metrics_from_ranks(torch.tensor([0.0, 3.0]), [5, 20])) - {"users"}
    assert emitted == set(reported_metrics([5, 20]))
