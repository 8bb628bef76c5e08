"""Which part of a user's training sequence one epoch trains on (`data.train_window`).

A window is `max_history + 1` consecutive items: the model reads the first
`max_history` and predicts each next one. Modes:

- `random` (default): one window per user per epoch, ending at a position drawn
  uniformly from every place a full window can end, so over epochs every
  training target is trained on (SASRec-style models otherwise see only the
  last `max_history` targets of a long user, every epoch). The draw depends only
  on (seed, epoch, user), never on the rank or worker that reads the user, so it
  is identical across backends and exactly resumable.
- `all`: every window with a stride of `max_history`, newest first: each target
  is predicted exactly once per epoch (a long user contributes several windows).
- `last`: the last window only (the behaviour before train windows existed),
  kept for ablation.

A user no longer than one window always trains on the whole prefix.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

TrainWindow = Literal["random", "all", "last"]
WINDOW_MODES: tuple[str, ...] = ("random", "all", "last")
_WINDOW_SALT = 0x77494E44  # keeps window draws independent of the stream's other seeds


def window_bounds(
    n: int, max_history: int, mode: str, *, seed: int, epoch: int, user: int
) -> list[tuple[int, int]]:
    """[start, end) slices of an n-item training prefix that the epoch trains on."""
    span = max_history + 1
    if n <= span:
        return [(0, n)]
    if mode == "last":
        return [(n - span, n)]
    if mode == "random":
        rng = np.random.default_rng([seed, epoch, user, _WINDOW_SALT])
        end = int(rng.integers(span, n + 1))
        return [(end - span, end)]
    if mode == "all":
        # Window ending at e predicts items e-max_history .. e-1; the next one ends
        # max_history earlier, so the predicted ranges tile 1 .. n-1 exactly once.
        return [(max(0, end - span), end) for end in range(n, 1, -max_history)]
    raise ValueError(f"data.train_window={mode!r}: expected one of {WINDOW_MODES}")


def windows_per_user(n: int, max_history: int, mode: str) -> int:
    """How many windows (training examples) an n-item prefix yields per epoch."""
    if mode == "all" and n > max_history + 1:
        return -(-(n - 1) // max_history)
    return 1


def targets_per_user(n: int, max_history: int, mode: str) -> int:
    """Next-item targets an n-item prefix contributes per epoch."""
    if n < 2:
        return 0
    return n - 1 if mode == "all" else min(n, max_history + 1) - 1
