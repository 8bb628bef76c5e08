"""A deterministic, exactly resumable WebDataset stream of one domain's user sequences.

Order of an epoch (same on every run with the same seed):
  shards permuted by (seed, epoch) -> split by rank (`rank::world`) -> split by
  worker (`worker::num_workers`) -> each worker reads its shards `shuffle_shards`
  at a time (a window), permutes the window's samples by (seed, epoch, reader,
  window) and batches them. Each user becomes one or more training examples per
  epoch by `data.train_window` (distrec/data/windows.py).
A reader is one (rank, worker) pair, numbered `rank + world * worker`: exactly
the stride its shards are taken at. Readers, not ranks, own the order, so one
process with W workers and W-step gradient accumulation sees the same global
batches as W processes with one worker each (the parity tests rely on it).
Because a window is a closed unit, a worker's position is (window, offset) and a
resumed worker reopens only that window: nothing before it is replayed. The
window plays the role of webdataset's shuffle buffer, with a state we can save.
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice, pairwise

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from distrec.config.errors import ConfigError
from distrec.data.collate import collate_sequences
from distrec.data.manifest import Manifest
from distrec.data.shards import read_shard
from distrec.data.windows import targets_per_user, window_bounds, windows_per_user
from distrec.data.writer import train_length

logger = logging.getLogger(__name__)


class CorruptShardError(RuntimeError):
    """A shard that cannot be read; names the shard and the byte offset."""


@dataclass
class StreamSpec:
    """How a domain is streamed: batch and history sizes, seed, workers, windowing, faults."""

    batch_size: int
    max_history: int
    seed: int = 0
    num_workers: int = 0
    shuffle_shards: int = 4
    resampled: bool = False
    corrupt: str = "fail"
    train_fraction: float = 1.0
    shard_url: str | None = None
    train_window: str = "random"


@dataclass
class WorkerPlan:
    """What logical worker `worker` of rank `rank` reads in `epoch`, and where it starts."""

    epoch: int
    rank: int
    world_size: int
    worker: int
    num_workers: int
    start_window: int = 0
    start_offset: int = 0
    batches_done: int = 0


def _truncation_offset(url: str) -> int | str:
    """Byte offset of the first tar member that cannot be read (local files only)."""
    offset = 0
    try:
        with tarfile.open(url, "r:") as tar:
            for member in tar:
                offset = member.offset_data + member.size
        return offset
    except tarfile.TarError:
        return offset
    except OSError:
        return "?"


def epoch_shards(num_shards: int, seed: int, epoch: int, resampled: bool, draws: int) -> list[int]:
    """The epoch's global shard order: a permutation, or `draws` draws with replacement."""
    rng = np.random.default_rng([seed, epoch, 0x5A4D])
    if resampled:
        return rng.integers(0, num_shards, size=draws).tolist()
    return rng.permutation(num_shards).tolist()


def split_shards(order: list[int], rank: int, world: int, worker: int, workers: int) -> list[int]:
    """Node split then worker split, as webdataset's split_by_node/split_by_worker do.

    Done explicitly (not through torch's worker info) because a resumed loader
    rotates which physical worker plays which logical worker.
    """
    return list(islice(islice(order, rank, None, world), worker, None, workers))


class DomainStream(IterableDataset):
    """Yields collated batches; each carries `worker` and `position` for exact resume."""

    def __init__(
        self,
        manifest: Manifest,
        spec: StreamSpec,
        rank: int = 0,
        world_size: int = 1,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        super().__init__()
        self.manifest = manifest
        self.spec = spec
        self.rank = rank
        self.world_size = world_size
        self.transform = transform
        self.urls = manifest.shard_urls(spec.shard_url)
        self.sizes = self._examples_per_shard(manifest.shards)
        if len(self.urls) < world_size * max(1, spec.num_workers) and not spec.resampled:
            logger.warning(
                "%s: %d shards for %d ranks x %d workers: some readers get none; "
                "prepare with a smaller users_per_shard",
                manifest.domain,
                len(self.urls),
                world_size,
                max(1, spec.num_workers),
            )
        self.plans: dict[int, WorkerPlan] = {}
        self.rotation = 0
        self.skipped_shards: list[str] = []

    # -- planning (main process) -----------------------------------------------------------
    def worker_shards(
        self, epoch: int, rank: int, worker: int, draws: int | None = None
    ) -> list[int]:
        """The shards logical worker `worker` of `rank` reads in `epoch`, in order."""
        workers = max(1, self.spec.num_workers)
        count = draws if draws is not None else len(self.urls)
        order = epoch_shards(len(self.urls), self.spec.seed, epoch, self.spec.resampled, count)
        return split_shards(order, rank, self.world_size, worker, workers)

    def batches_in_epoch(self, epoch: int) -> int:
        """Max over ranks of this epoch's batch count, from the manifest's shard sizes.

        Every rank yields exactly this many batches (shorter ranks pad with empty
        batches) so no rank runs out first and hangs the collectives.
        """
        workers = max(1, self.spec.num_workers)
        most = 0
        for rank in range(self.world_size):
            rank_batches = 0
            for worker in range(workers):
                shards = self.worker_shards(epoch, rank, worker)
                examples = sum(self.sizes[shard] for shard in shards)
                rank_batches += -(-examples // self.spec.batch_size)
            most = max(most, rank_batches)
        return most

    def _kept_lengths(self, shards: list) -> list[list[int]]:
        """Per shard, the training-prefix lengths of the users the stream keeps; exact under
        few-shot filtering because the writer fills shards with consecutive user indices."""
        bounds = np.cumsum([0, *(shard.users for shard in shards)])
        out = []
        for shard, (first, end) in zip(shards, pairwise(bounds), strict=True):
            keep = self._keep_mask(list(range(first, end)))
            out.append(
                [
                    train_length(length)
                    for length, kept in zip(shard.lengths, keep, strict=True)
                    if kept
                ]
            )
        return out

    def _examples_per_shard(self, shards: list) -> list[int]:
        """Training examples (windows) each shard yields per epoch."""
        history, window = self.spec.max_history, self.spec.train_window
        return [
            sum(windows_per_user(length, history, window) for length in lengths)
            for lengths in self._kept_lengths(shards)
        ]

    def targets_per_epoch(self) -> int:
        """Next-item targets one epoch trains on, over all ranks (the run log states it)."""
        history, window = self.spec.max_history, self.spec.train_window
        kept = self._kept_lengths(self.manifest.shards)
        return sum(
            targets_per_user(length, history, window) for lengths in kept for length in lengths
        )

    # -- iteration (worker process) ----------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        workers = info.num_workers if info is not None else 1
        logical = (physical + self.rotation) % workers
        plan = self.plans[logical]
        yield from self._worker_batches(plan)

    def _worker_batches(self, plan: WorkerPlan) -> Iterator[dict]:
        shards = self._plan_shards(plan)
        windows = [
            shards[i : i + self.spec.shuffle_shards]
            for i in range(0, len(shards), self.spec.shuffle_shards)
        ]
        pending: list[dict] = []
        batches_done = plan.batches_done
        for window in range(plan.start_window, len(windows)):
            samples = self._read_window(windows[window], plan, window)
            start = plan.start_offset if window == plan.start_window else 0
            for offset in range(start, len(samples)):
                sample = samples[offset]
                if sample is not None:
                    pending.append(sample)
                if len(pending) == self.spec.batch_size:
                    batches_done += 1
                    yield self._emit(pending, plan, (window, offset + 1), batches_done)
                    pending = []
        if pending:
            batches_done += 1
            yield self._emit(pending, plan, (len(windows), 0), batches_done)

    def _plan_shards(self, plan: WorkerPlan) -> list[int]:
        draws = None
        if self.spec.resampled:
            # Enough draws for the epoch; the loader stops at epoch_batches anyway.
            draws = 1 << 16
        return self.worker_shards(plan.epoch, plan.rank, plan.worker, draws)

    def _read_window(
        self, shard_ids: list[int], plan: WorkerPlan, window: int
    ) -> list[dict | None]:
        samples: list[dict | None] = []
        for shard_id in shard_ids:
            samples.extend(self._read_shard(self.urls[shard_id]))
        reader = plan.rank + plan.world_size * plan.worker
        rng = np.random.default_rng([self.spec.seed, plan.epoch, reader, 0, window])
        order = rng.permutation(len(samples))
        keep = self._keep_mask([s["index"] for s in samples])
        examples: list[dict | None] = []
        for position in order:
            if keep[position]:
                examples.extend(self._training_examples(samples[position], plan.epoch))
            else:
                examples.append(None)
        return examples

    def _keep_mask(self, indices: list[int]) -> np.ndarray:
        """Few-shot: a fixed subset of users (by a hash of the user index and seed)."""
        if self.spec.train_fraction >= 1.0:
            return np.ones(len(indices), dtype=bool)
        hashed = (
            np.array(indices, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            + np.uint64(self.spec.seed)
        ) % np.uint64(1_000_003)
        return hashed < np.uint64(int(self.spec.train_fraction * 1_000_003))

    def _read_shard(self, url: str) -> list[dict]:
        try:
            return read_shard(url)
        except (tarfile.TarError, OSError, ValueError, EOFError, io.UnsupportedOperation) as err:
            offset = _truncation_offset(url)
            message = f"corrupt or truncated shard {url} (near byte offset {offset}): {err}"
            if self.spec.corrupt == "fail":
                raise CorruptShardError(
                    message + "; re-run `distrec data prepare --overwrite` "
                    "or set data.corrupt_shards=skip"
                ) from err
            logger.warning("%s; skipping it (data.corrupt_shards=skip)", message)
            self.skipped_shards.append(url)
            return []

    def _training_examples(self, sample: dict, epoch: int) -> list[dict]:
        """The epoch's windows of the user's training prefix (leave-one-out)."""
        bounds = window_bounds(
            train_length(len(sample["items"])),
            self.spec.max_history,
            self.spec.train_window,
            seed=self.spec.seed,
            epoch=epoch,
            user=sample["index"],
        )
        examples = []
        for start, end in bounds:
            example = {"index": sample["index"], "items": sample["items"][start:end]}
            if "ratings" in sample:
                example["ratings"] = sample["ratings"][start:end]
            examples.append(example)
        return examples

    def _emit(
        self, samples: list[dict], plan: WorkerPlan, position: tuple[int, int], batches_done: int
    ) -> dict:
        batch = collate_sequences(samples, self.spec.max_history)
        batch.update(
            worker=plan.worker,
            position=position,
            batches_done=batches_done,
            skipped_shards=len(self.skipped_shards),
        )
        return self.transform(batch) if self.transform else batch


@dataclass
class EpochPosition:
    """Per logical worker: batches consumed and the (window, offset) after the last one."""

    epoch: int = 0
    batches: int = 0
    last_worker: int = -1
    workers: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def make_plans(stream: DomainStream, pos: EpochPosition) -> dict[int, WorkerPlan]:
    """Each logical worker's plan for the epoch, starting where `pos` left it."""
    workers = max(1, stream.spec.num_workers)
    plans = {}
    for worker in range(workers):
        window, offset, batches_done = pos.workers.get(worker, (0, 0, 0))
        plans[worker] = WorkerPlan(
            epoch=pos.epoch,
            rank=stream.rank,
            world_size=stream.world_size,
            worker=worker,
            num_workers=workers,
            start_window=window,
            start_offset=offset,
            batches_done=batches_done,
        )
    return plans


def check_resumable(saved: dict, stream: DomainStream) -> None:
    """ConfigError unless `stream` can continue exactly from the saved loader state."""
    want = {
        "num_workers": max(1, stream.spec.num_workers),
        "world_size": stream.world_size,
        "fingerprint": stream.manifest.fingerprint,
        "batch_size": stream.spec.batch_size,
        "train_window": stream.spec.train_window,
    }
    for key, value in want.items():
        if saved.get(key) != value:
            raise ConfigError(
                f"cannot resume the {stream.manifest.domain} stream exactly: saved {key}="
                f"{saved.get(key)!r}, now {value!r}. Resume with the same {key}, or start the data "
                f"stream afresh at the next epoch (drop the checkpoint's data state)"
            )


def empty_like(batch: dict) -> dict:
    """An all-padding batch of the same shapes: keeps ranks in step when one runs short."""
    out = {}
    for key, value in batch.items():
        out[key] = torch.zeros_like(value) if isinstance(value, torch.Tensor) else value
    return out
