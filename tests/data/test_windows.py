"""Train windows: every target trained on, exactly once per epoch in `all` mode."""

from collections import Counter

import pytest

from distrec.data.windows import targets_per_user, window_bounds, windows_per_user


def targets(bounds: list[tuple[int, int]]) -> list[int]:
    """Positions predicted by the windows (every item of a window but its first)."""
    return [t for start, end in bounds for t in range(start + 1, end)]


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 11, 12, 13, 40, 101])
def test_all_mode_predicts_every_target_exactly_once(n):
    bounds = window_bounds(n, 5, "all", seed=0, epoch=0, user=3)
    assert Counter(targets(bounds)) == Counter(range(1, n))
    assert all(end - start <= 6 for start, end in bounds)
    assert len(bounds) == windows_per_user(n, 5, "all")
    assert len(targets(bounds)) == targets_per_user(n, 5, "all")


def test_last_mode_is_the_newest_window():
    assert window_bounds(20, 5, "last", seed=0, epoch=0, user=0) == [(14, 20)]
    assert window_bounds(4, 5, "last", seed=0, epoch=0, user=0) == [(0, 4)]
    assert targets_per_user(20, 5, "last") == 5


def test_random_mode_covers_the_whole_prefix_over_epochs_and_is_seeded():
    draws = [window_bounds(30, 5, "random", seed=1, epoch=e, user=7)[0] for e in range(200)]
    assert all(end - start == 6 for start, end in draws)
    assert {start for start, _ in draws} == set(range(0, 25))  # every full window occurs
    assert set(targets(draws)) == set(range(1, 30))  # every target is trained on
    again = [window_bounds(30, 5, "random", seed=1, epoch=e, user=7)[0] for e in range(200)]
    assert again == draws
    other_user = [window_bounds(30, 5, "random", seed=1, epoch=e, user=8)[0] for e in range(200)]
    assert other_user != draws


def test_short_users_always_train_on_their_whole_prefix():
    for mode in ("random", "all", "last"):
        assert window_bounds(6, 5, mode, seed=0, epoch=3, user=1) == [(0, 6)]


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match=r"data.train_window='first'"):
        window_bounds(30, 5, "first", seed=0, epoch=0, user=0)
