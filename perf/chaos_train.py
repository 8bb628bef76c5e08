"""`python -m distrec.train`, plus a line per finished training batch in
`$DISTREC_CHAOS_LOG/samples-rank{R}.jsonl` (stage, batch index, domain, users): what
perf/chaos.py counts to show that no sample of the stream was lost or repeated.

Launched by perf/chaos.py through `accelerate launch perf/chaos_train.py --config ...`; the
product itself is untouched (the Trainer's step is wrapped here only).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from distrec.train.entry import main
from distrec.train.trainer import Trainer


def log_batches(folder: Path) -> None:
    """Wrap Trainer.train_step to append one JSON line per completed batch."""
    step = Trainer.train_step
    rank = int(os.environ.get("RANK", "0"))
    attempt = int(os.environ.get("DISTREC_CHAOS_ATTEMPT", "0"))
    path = folder / f"samples-rank{rank}.jsonl"

    def logged(self: Trainer, batch):
        out = step(self, batch)
        record = {
            "attempt": attempt,
            "stage": self.plan.name,
            "batch": self.state.global_batches,  # batches done before this one
            "domain": batch["domain"],
            "users": [int(u) for u in batch["users"]],
        }
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return out

    Trainer.train_step = logged


if __name__ == "__main__":
    log_batches(Path(os.environ["DISTREC_CHAOS_LOG"]))
    sys.exit(main())
