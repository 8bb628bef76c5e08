"""Time to quality compares the first time each curve reaches the peer's best."""

from perf.time_to_quality import compare, first_reaching


def test_first_reaching_takes_the_first_crossing():
    assert first_reaching([(1.0, 0.1), (2.0, 0.3), (3.0, 0.2), (4.0, 0.4)], 0.3) == 2.0
    assert first_reaching([(1.0, 0.1)], 0.3) is None


def test_the_fraction_is_distrec_time_over_peer_time_to_the_peer_best():
    peer = {"curve": [{"elapsed_s": 100.0 * e, "valid_ndcg@10": v} for e, v in
                      enumerate([0.02, 0.08, 0.10, 0.09])], "capped": True, "threads": 1}  # fmt: skip
    stage = {"history": [{"elapsed_s": 5.0 * e, "valid_ndcg@10": 0.03 * e} for e in range(1, 8)]}
    out = compare(peer, stage)
    assert out["target_valid_ndcg@10"] == 0.10 and out["peer_seconds"] == 200.0
    assert out["distrec_seconds"] == 20.0 and out["fraction_of_peer_time"] == 0.1
    assert out["peer_capped"]
