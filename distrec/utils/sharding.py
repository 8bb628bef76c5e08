"""`Shard`: which slice of a job this process does, and how the slices come back together.

Single-device code (item features in models/, ranking in eval/) takes one, so it
can split work over ranks without importing a backend: the collectives are
injected by the caller (distrec.distributed.collectives on a real launch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    """Rank `rank` of `world`; `gather` returns every rank's tensor in rank order, `barrier`
    waits for every rank. Both None on one process."""

    rank: int = 0
    world: int = 1
    gather: Callable[[torch.Tensor], list[torch.Tensor]] | None = None
    barrier: Callable[[], None] | None = None

    def gathered(self, local: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `local` in rank order ([local] alone on one process)."""
        if self.world > 1 and self.gather is not None:
            return self.gather(local)
        return [local]

    def wait(self) -> None:
        """Wait for every rank (no-op on one process)."""
        if self.barrier is not None:
            self.barrier()


SINGLE = Shard()
