"""Epoch-aware loaders over `DomainStream`s with exact save/restore, and their mixture.

`StreamLoader` runs one domain's stream through a torch DataLoader (batches
are built in the workers) and yields exactly the same number of batches on
every rank. `MixtureLoader` interleaves several domains by weight; the choice
of domain per step depends only on (seed, epoch, step), so ranks stay in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from distrec.data.collate import collate_sequences
from distrec.data.manifest import Manifest
from distrec.data.stream import (
    DomainStream,
    EpochPosition,
    StreamSpec,
    check_resumable,
    empty_like,
    make_plans,
)


def retire(batches: Iterator[dict]) -> None:
    """Shut down a DataLoader iterator's workers and wait for its queues' feeder threads to
    exit. The next epoch forks new workers (often at once: `prefetch`); a fork while one of
    those threads is exiting can leave the child blocked for ever in CPython's after-fork
    cleanup (seen: a rank that never exits), so no thread may be exiting when it forks."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is None:  # no workers (num_workers=0)
        return
    shutdown()
    queues = [
        *getattr(batches, "_index_queues", []),
        getattr(batches, "_worker_result_queue", None),
    ]
    for queue in queues:
        feeder = getattr(queue, "_thread", None)  # multiprocessing.Queue's feeder, if started
        if feeder is not None:
            feeder.join(timeout=10.0)


class StreamLoader:
    """One domain's stream through a DataLoader: same batch count on every rank, resumable."""

    def __init__(
        self,
        manifest: Manifest,
        spec: StreamSpec,
        rank: int = 0,
        world_size: int = 1,
        transform: Callable[[dict], dict] | None = None,
        epoch_batches: int | None = None,
    ) -> None:
        if spec.resampled and epoch_batches is None:
            raise ValueError("a resampled stream needs epoch_batches (it has no natural end)")
        self.stream = DomainStream(manifest, spec, rank, world_size, transform)
        self.domain = manifest.domain
        self.epoch_batches = epoch_batches
        self.pos = EpochPosition()
        self._pending: tuple[int, Iterator[dict]] | None = None

    @property
    def epoch(self) -> int:
        """The epoch being read (0-based; advances once an epoch's batches are consumed)."""
        return self.pos.epoch

    def __len__(self) -> int:
        """Batches in the current epoch (the same on every rank)."""
        if self.epoch_batches is not None:
            return self.epoch_batches
        return self.stream.batches_in_epoch(self.pos.epoch)

    def _roll_over(self) -> None:
        if self.pos.batches >= len(self):
            self.pos = EpochPosition(epoch=self.pos.epoch + 1)

    def _start(self) -> Iterator[dict]:
        """A DataLoader iterator from the current position (workers start reading now)."""
        workers = max(1, self.stream.spec.num_workers)
        self.stream.plans = make_plans(self.stream, self.pos)
        # A resumed DataLoader polls its worker 0 first: let it play the logical
        # worker that was next in the round-robin when the state was saved.
        self.stream.rotation = (self.pos.last_worker + 1) % workers
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the
        # global RNG, which would shift dropout randomness after a mid-epoch resume.
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.stream.spec.num_workers,
            generator=torch.Generator().manual_seed(self.stream.spec.seed),
        )
        return iter(loader)

    def prefetch(self) -> None:
        """If the epoch is complete, start the next one's workers now (e.g. while the
        trainer evaluates) so the first batches are ready when training resumes."""
        if self.pos.batches >= len(self) and self.stream.spec.num_workers > 0:
            self._roll_over()
            self._pending = (self.pos.epoch, self._start())

    def close(self) -> None:
        """Shut down prefetched workers now: each is a fork of the trainer, and a finished
        stage's leftovers would otherwise hold their memory until garbage collection."""
        if self._pending is not None:
            retire(self._pending[1])
        self._pending = None

    def __iter__(self) -> Iterator[dict]:
        """The rest of the current epoch (the next one if the current one is complete)."""
        self._roll_over()
        total = len(self)
        pending, self._pending = self._pending, None
        fresh = pending is not None and pending[0] == self.pos.epoch and self.pos.batches == 0
        batches = pending[1] if fresh else self._start()
        try:
            yield from self._epoch_batches(batches, total)
        finally:
            retire(batches)

    def _epoch_batches(self, batches: Iterator[dict], total: int) -> Iterator[dict]:
        template: dict | None = None
        epoch = self.pos.epoch
        # A suspended generator must not run on into an epoch that prefetch() started.
        while self.pos.epoch == epoch and self.pos.batches < total:
            batch = next(batches, None)
            if batch is None:
                template = template or self._template()
                batch = empty_like(template)
            else:
                template = batch
                worker = int(batch["worker"])
                self.pos.workers[worker] = (*batch["position"], int(batch["batches_done"]))
                self.pos.last_worker = worker
            self.pos.batches += 1
            batch["domain"] = self.domain
            yield batch

    def _template(self) -> dict:
        batch = collate_sequences([{"index": 0, "items": [1, 1]}], self.stream.spec.max_history)
        batch.update(worker=-1, position=(0, 0), batches_done=0, skipped_shards=0)
        return self.stream.transform(batch) if self.stream.transform else batch

    def state_dict(self) -> dict:
        """The position to resume from, plus what must match for an exact resume."""
        return {
            "domain": self.domain,
            "epoch": self.pos.epoch,
            "batches": self.pos.batches,
            "last_worker": self.pos.last_worker,
            "workers": {str(w): list(v) for w, v in self.pos.workers.items()},
            "num_workers": max(1, self.stream.spec.num_workers),
            "world_size": self.stream.world_size,
            "batch_size": self.stream.spec.batch_size,
            "train_window": self.stream.spec.train_window,
            "fingerprint": self.stream.manifest.fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`; ConfigError if the stream changed shape."""
        check_resumable(state, self.stream)
        self._pending = None
        self.pos = EpochPosition(
            epoch=int(state["epoch"]),
            batches=int(state["batches"]),
            last_worker=int(state["last_worker"]),
            workers={int(w): tuple(v) for w, v in state["workers"].items()},
        )


class MixtureLoader:
    """Weighted interleaving of domain loaders; one mixture epoch = the sum of their epochs."""

    def __init__(
        self,
        loaders: dict[str, StreamLoader],
        weights: dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.loaders = loaders
        self.names = sorted(loaders)
        weight = np.array([(weights or {}).get(name, 1.0) for name in self.names], dtype=np.float64)
        self.probs = weight / weight.sum()
        self.seed = seed
        self.epoch = 0
        self.step = 0
        self.total: int | None = None
        self._iters: dict[str, Iterator[dict]] = {}

    def __len__(self) -> int:
        if self.total is None:
            self.total = sum(len(self.loaders[name]) for name in self.names)
        return self.total

    def targets_per_epoch(self) -> int:
        """Next-item targets one epoch of every domain trains on (the run log states it)."""
        return sum(loader.stream.targets_per_epoch() for loader in self.loaders.values())

    def epoch_complete(self) -> bool:
        """Whether every batch of the current epoch has been yielded (the next `iter()`
        starts the next epoch)."""
        return self.total is not None and self.step >= self.total

    def batches_left(self) -> int:
        """Batches the next `iter()` yields (a finished epoch rolls over to the next)."""
        if self.total is not None and self.step >= self.total:
            self.epoch, self.step, self.total = self.epoch + 1, 0, None
        return len(self) - self.step

    def prefetch(self) -> None:
        """Start the next epoch's workers of every domain whose epoch is complete."""
        for loader in self.loaders.values():
            loader.prefetch()

    def close(self) -> None:
        """Stop every domain's workers (prefetched or mid-epoch)."""
        for batches in self._iters.values():
            batches.close()
        self._iters = {}
        for loader in self.loaders.values():
            loader.close()

    def __iter__(self) -> Iterator[dict]:
        self.batches_left()
        total = len(self)
        while self.step < total:
            name = self._pick(self.step)
            batch = next(self._iters.setdefault(name, iter(self.loaders[name])), None)
            if batch is None:  # that domain finished its own epoch: start its next one
                self._iters[name] = iter(self.loaders[name])
                batch = next(self._iters[name])
            self.step += 1
            yield batch

    def _pick(self, step: int) -> str:
        if len(self.names) == 1:
            return self.names[0]
        rng = np.random.default_rng([self.seed, self.epoch, step, 0x4D49])
        return self.names[int(rng.choice(len(self.names), p=self.probs))]

    def state_dict(self) -> dict:
        """Mixture position plus every domain loader's state."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "total": self.total,
            "loaders": {name: self.loaders[name].state_dict() for name in self.names},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`."""
        self.epoch, self.step, self.total = state["epoch"], state["step"], state["total"]
        for name, sub in state["loaders"].items():
            self.loaders[name].load_state_dict(sub)
        self._iters = {}
