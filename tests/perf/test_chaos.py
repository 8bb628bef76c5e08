"""perf/chaos.py's accounting: lost, repeated and redone batches are counted from the
per-batch log, and wasted work is charged to the kill that caused it."""

from perf.chaos import effective_stream, same_metrics, sample_accounting, wasted_per_kill


def row(attempt, batch, users, rank=0, stage="pretrain"):
    return {"attempt": attempt, "stage": stage, "rank": rank, "batch": batch, "users": users}


STRAIGHT = [row(0, b, [2 * b, 2 * b + 1]) for b in range(6)]


def test_a_resume_that_redoes_batches_loses_and_repeats_nothing():
    # killed after batch 3 was done; the checkpoint was at 2: batches 2 and 3 are redone
    chaos = [row(0, b, [2 * b, 2 * b + 1]) for b in range(4)]
    chaos += [row(1, b, [2 * b, 2 * b + 1]) for b in range(2, 6)]
    counts = sample_accounting(STRAIGHT, chaos)
    assert counts["batches_redone"] == 2
    assert counts["samples_lost"] == counts["samples_repeated"] == 0
    assert counts["batches_with_other_users"] == 0
    assert wasted_per_kill(chaos, [{"attempt": 0}]) == [2]


def test_a_skipped_batch_is_lost_and_a_reshuffled_one_repeats_users():
    lost = [r for r in STRAIGHT if r["batch"] != 4]
    assert sample_accounting(STRAIGHT, lost)["samples_lost"] == 2
    assert sample_accounting(STRAIGHT, lost)["batches_lost"] == 1
    repeated = [*STRAIGHT[:5], row(1, 5, [0, 1])]  # batch 5 redone with batch 0's users
    counts = sample_accounting(STRAIGHT, repeated)
    assert counts["samples_repeated"] == 2 and counts["samples_lost"] == 2
    assert counts["batches_with_other_users"] == 1
    _, changed = effective_stream([*STRAIGHT, row(1, 5, [9, 9])])
    assert changed == 1


def test_metrics_must_match_stage_by_stage_including_the_loss_history():
    a = {
        "stages": {"pretrain": {"valid": {"ndcg@10": 0.5}, "test": {}, "history": [{"loss": 1.0}]}}
    }
    b = {
        "stages": {"pretrain": {"valid": {"ndcg@10": 0.5}, "test": {}, "history": [{"loss": 1.0}]}}
    }
    assert same_metrics(a, b)
    b["stages"]["pretrain"]["history"][0]["loss"] = 1.0000001
    assert not same_metrics(a, b)
