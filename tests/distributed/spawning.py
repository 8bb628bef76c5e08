"""Run a test function on several processes joined by a real gloo process group.

In the manner of torchtune's FSDPTest / accelerate's debug_launcher, without a launcher:
`run_on_ranks(fn, ...)` spawns `world` fresh interpreters, each initialises gloo on
127.0.0.1 at a free port and calls `fn(rank, world, *args)`; an exception on any rank
fails the calling test with that rank's traceback, and a rank that hangs (a collective
the others never join) fails it after `timeout` seconds instead of hanging pytest.
`fn` must be importable (a module-level function), as spawn pickles it by name.
"""

from __future__ import annotations

import os
import queue
import socket
import traceback
from datetime import timedelta

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank: int, world: int, port: int, args: tuple, results) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=30),
        )
        try:
            results.put((rank, True, fn(rank, world, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def run_on_ranks(fn, *args, world: int = 2, timeout: float = 90.0) -> list:
    """`fn(rank, world, *args)` on `world` gloo ranks; returns each rank's result, in rank
    order (results must be picklable)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    procs = [
        ctx.Process(target=_rank_main, args=(fn, rank, world, port, args, results), daemon=True)
        for rank in range(world)
    ]
    for p in procs:
        p.start()
    answers: dict[int, tuple[bool, object]] = {}
    try:
        while len(answers) < world:
            try:
                rank, ok, value = results.get(timeout=timeout)
            except queue.Empty:
                codes = {r: p.exitcode for r, p in enumerate(procs)}
                missing = sorted(set(range(world)) - set(answers))
                raise AssertionError(
                    f"ranks {missing} gave no answer within {timeout}s (exit codes {codes}); "
                    f"answers so far: {answers}"
                ) from None
            answers[rank] = (ok, value)
            if not ok:
                raise AssertionError(f"rank {rank} of {world} failed:\n{value}")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    return [answers[r][1] for r in range(world)]
